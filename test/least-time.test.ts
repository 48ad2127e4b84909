/**
 * least_time: the picker's formula without sockets, the shared average, and
 * shares through a running l4lb to backends that answer 0, 20 and 80 ms late
 * (a greeting for `first_byte`, a TLS handshake for `connect`), before and
 * after their delays change. Shares are compared by order, never by number.
 */
import tls from 'node:tls';
import { test, type Test } from 'tap';
import { blendResponse, createPicker, LEAST_TIME_ALPHA, LeastTimePicker, medianResponse } from '../src/balance/index.js';
import { buildModel } from '../src/config/load.js';
import { Pool } from '../src/pool.js';
import { SharedMemory } from '../src/shared/memory.js';
import { SharedServerCounts } from '../src/shared/server-counts.js';
import { testCerts } from './helpers/certs.js';
import { problemsOf } from './helpers/config.js';
import { adminPort, backendFor, lbFor } from './helpers/lb.js';
import { connect, readLine, startBackend, tally, waitFor, TEST_WORKERS, type Backend } from './helpers/net.js';
import { seededRandom } from './helpers/random.js';

interface Srv {
  name: string;
  weight: number;
  active: number;
  responseUs: number;
}

const srv = (name: string, responseUs: number, active = 0, weight = 1): Srv => ({ name, weight, active, responseUs });

test('least_time picks the lowest (active + 1) × average ÷ weight', async (t) => {
  const fast = srv('fast', 1_000);
  const slow = srv('slow', 1_500);
  const picker = new LeastTimePicker([fast, slow]);
  t.equal(picker.pick(''), fast, 'idle: the faster server');
  fast.active = 1; // 2 × 1000 > 1 × 1500
  t.equal(picker.pick(''), slow, 'a connection open on the fast one tips it');
  const heavy = srv('heavy', 1_500, 1, 3); // 2 × 1500 / 3 = 1000 < 2000
  t.equal(new LeastTimePicker([fast, heavy]).pick(''), heavy, 'weight divides the score');
  t.equal(picker.pick('', new Set([slow])), fast, 'an excluded server is never returned');
  t.equal(picker.pick('', new Set([slow, fast])), undefined, 'none left');
  t.type(createPicker('least_time', [fast]), LeastTimePicker, 'the factory knows least_time');
});

test('least_time counts a server with no figure yet at the pool median, not as the fastest', async (t) => {
  const fresh = srv('fresh', 0);
  const quick = srv('quick', 1_000);
  const slow = srv('slow', 3_000);
  const picker = new LeastTimePicker([fresh, quick, slow]);
  t.equal(medianResponse([fresh, quick, slow]), 2_000);
  t.equal(picker.pick(''), quick, 'the fresh server scores 2000 (median), the quick one 1000');
  quick.active = 2; // 3000 > 2000
  t.equal(picker.pick(''), fresh, 'it gets connections once it is the better bet');
});

test('least_time spreads ties at random, by weight', async (t) => {
  const even = new LeastTimePicker([srv('a', 0), srv('b', 0)], seededRandom(7));
  const picks = tally(Array.from({ length: 400 }, () => even.pick('')!.name));
  t.ok(picks.a! > 100 && picks.b! > 100, `no figures yet: both picked (${JSON.stringify(picks)})`);
  // (0 + 1) × 1000 / 1 = (1 + 1) × 1000 / 2: a tie, which the heavier server wins about 2 times in 3.
  const weighted = new LeastTimePicker([srv('a', 1_000), srv('b', 1_000, 1, 2)], seededRandom(7));
  const wpicks = tally(Array.from({ length: 400 }, () => weighted.pick('')!.name));
  t.ok(wpicks.a! > 60 && wpicks.b! > wpicks.a!, `a tie goes to both, the heavier more (${JSON.stringify(wpicks)})`);
});

test('the average moves 30% of the way per sample and starts from the given seed', async (t) => {
  t.equal(LEAST_TIME_ALPHA, 0.3);
  t.equal(blendResponse(0, 5_000, 0), 5_000, 'the first sample of a pool with no figures is taken as it is');
  t.equal(blendResponse(0, 5_000, 1_000), 2_200, 'a new server starts at the median');
  t.equal(blendResponse(10_000, 0, 0), 7_000);
  t.equal(blendResponse(1, 0, 0), 1, 'never 0 (which means none)');
});

test('every thread reads and folds into the same average in shared memory', async (t) => {
  const memory = SharedMemory.create(2, { servers: 4, listeners: 1, pairs: 1, pools: 1 });
  const main = new SharedServerCounts(memory, 2);
  const worker = new SharedServerCounts(SharedMemory.attach(memory.handles(), 1), 2);
  worker.updateResponse((p) => blendResponse(p, 10_000, 0));
  t.equal(main.responseUs, 10_000);
  main.updateResponse((p) => blendResponse(p, 20_000, 0));
  t.equal(worker.responseUs, 13_000);
  memory.clearServer(2);
  t.equal(worker.responseUs, 0, 'a slot handed out again starts with no figure');
});

test('a pool folds only its own measure, and a recovered server restarts at the median', async (t) => {
  const model = await buildModel({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [
      {
        name: 'p',
        balance: 'least_time',
        least_time: { measure: 'first_byte' },
        servers: [{ address: '127.0.0.1:1' }, { address: '127.0.0.1:2' }, { address: '127.0.0.1:3' }],
      },
    ],
  });
  const pool = new Pool(model.pools[0]!);
  t.teardown(() => pool.close());
  const [a, b, c] = pool.servers as [(typeof pool.servers)[0], (typeof pool.servers)[0], (typeof pool.servers)[0]];
  pool.reportResponse(a, 'connect', 5);
  t.equal(a.responseUs, 0, 'connect times do not count in a first_byte pool');
  pool.reportResponse(a, 'first_byte', 10);
  pool.reportResponse(b, 'first_byte', 30);
  t.equal(a.responseUs, 10_000);
  t.equal(b.responseUs, 16_000, "b's first sample starts from the median of the others (10 ms)");
  pool.reportResponse(c, 'first_byte', 900);
  pool.setHealth(c, false);
  pool.setHealth(c, true);
  t.equal(c.responseUs, 13_000, 'back up: the median of a and b, not its old figure');
});

test('least_time and its measure are read from the configuration', async (t) => {
  const base = (pool: Record<string, unknown>) => ({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }], ...pool }],
  });
  const m = await buildModel(base({ balance: 'least_time' }));
  t.equal(m.pools[0]!.balance, 'least_time');
  t.same(m.pools[0]!.leastTime, { measure: 'connect' }, 'measure defaults to connect');
  const problems = await problemsOf(base({ balance: 'least_time', least_time: { measure: 'last_byte' } }));
  t.ok(
    problems.some((p) => p.path.includes('least_time') && p.path.includes('measure')),
    `a bad measure is named by its path: ${JSON.stringify(problems)}`,
  );
});

// ---- through a running l4lb ---------------------------------------------------------

/** A backend that writes `hello NAME` after `delay.ms` (changeable), then drains what it is sent. */
function greeter(t: Test, name: string, delay: { ms: number }): Promise<Backend> {
  return backendFor(
    t,
    startBackend((s) => {
      const timer = setTimeout(() => s.destroyed || s.write(`hello ${name}\n`), delay.ms);
      s.on('close', () => clearTimeout(timer));
      s.resume();
    }),
  );
}

/** A TLS backend that starts its handshake only `delay.ms` (changeable) after the connect, then writes `hello NAME`. */
function slowHandshake(t: Test, name: string, delay: { ms: number }): Promise<Backend> {
  const certs = testCerts();
  const server = tls.createServer({ ...certs.pem('backend.test') }, (secure) => {
    secure.on('error', () => {});
    secure.write(`hello ${name}\n`);
    secure.resume();
  });
  server.on('tlsClientError', () => {});
  return backendFor(
    t,
    startBackend((s) => {
      // The ClientHello waits in the kernel until the TLS server is handed the socket.
      const timer = setTimeout(() => s.destroyed || server.emit('connection', s), delay.ms);
      s.on('close', () => clearTimeout(timer));
    }),
  );
}

/** `n` connections, `parallel` at a time: each reads the greeting line and closes. Who answered how often. */
async function shares(port: number, n: number, parallel: number): Promise<Record<string, number>> {
  const names: string[] = [];
  let started = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (started < n) {
        started++;
        const s = await connect(port);
        s.on('error', () => {});
        try {
          names.push((await readLine(s, 15_000)).replace('hello ', ''));
        } finally {
          s.destroy();
        }
      }
    }),
  );
  return { a: 0, b: 0, c: 0, ...tally(names) };
}

interface StatusServer {
  name: string;
  response_ms: number | null;
}

async function figures(port: number): Promise<Record<string, number | null>> {
  const doc = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { pools: Array<{ servers: StatusServer[] }> };
  return Object.fromEntries(doc.pools[0]!.servers.map((s) => [s.name, s.response_ms]));
}

/** Polls /status until the figures are in the order `names` (fastest first), within a generous deadline. */
async function figuresInOrder(port: number, names: readonly string[]): Promise<Record<string, number | null>> {
  let last: Record<string, number | null> = {};
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    last = await figures(port);
    const r = names.map((n) => last[n]);
    if (r.every((x) => typeof x === 'number') && r.every((x, i) => i === 0 || x! > r[i - 1]!)) return last;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`figures never in the order ${names.join(' < ')}: ${JSON.stringify(last)}`);
}

for (const measure of ['first_byte', 'connect'] as const) {
  test(`least_time (${measure}) sends most to the fastest server, and follows when the delays change (workers ${TEST_WORKERS})`, async (t) => {
    const delays = [{ ms: 0 }, { ms: 20 }, { ms: 80 }];
    const make = measure === 'first_byte' ? greeter : slowHandshake;
    const backends = await Promise.all(['a', 'b', 'c'].map((n, i) => make(t, n, delays[i]!)));
    const certs = measure === 'connect' ? testCerts() : null;
    const lb = await lbFor(t, {
      admin: { listen: '127.0.0.1:0' },
      listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
      pools: [
        {
          name: 'p',
          balance: 'least_time',
          least_time: { measure },
          // Probes keep every figure fresh (an idle server's too); a slow answer is not a failure here.
          health: { interval: '200ms', timeout: '3s', fall: 10, ...(measure === 'first_byte' ? { kind: 'tcp', expect: 'hello' } : {}) },
          ...(certs !== null ? { tls: { ca: certs.file('ca.crt'), servername: 'backend.test' } } : {}),
          servers: backends.map((b, i) => ({ name: 'abc'[i]!, address: b.address })),
        },
      ],
    });
    const admin = adminPort(lb);
    const before = await figuresInOrder(admin, ['a', 'b', 'c']);
    const first = await shares(lb.port(), 120, 6);
    t.comment(`delays 0/20/80 ms: figures ${JSON.stringify(before)} ms, shares ${JSON.stringify(first)}`);
    t.ok(first.a > first.b && first.b >= first.c, `shares in the order a > b >= c: ${JSON.stringify(first)}`);

    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    t.match(metrics, new RegExp(`l4lb_server_response_seconds\\{pool="p",server="a",measure="${measure}"\\} [0-9.e-]+`), 'the figure is a metric');
    const page = await (await fetch(`http://127.0.0.1:${admin}/`)).text();
    t.match(page, `least_time (${measure})`, 'the page names the measure');
    t.match(page, /\d+(\.\d+)? ms<\/td>/, 'and shows the figures');

    // a becomes the slowest and c the fastest: probes alone bring c's figure down (it takes no connections now).
    delays[0]!.ms = 80;
    delays[2]!.ms = 0;
    const after = await figuresInOrder(admin, ['c', 'b', 'a']);
    const second = await shares(lb.port(), 120, 6);
    t.comment(`delays 80/20/0 ms: figures ${JSON.stringify(after)} ms, shares ${JSON.stringify(second)}`);
    t.ok(second.c > second.b && second.b >= second.a, `shares shifted to c > b >= a: ${JSON.stringify(second)}`);
  });
}

test('a first_byte connection on which the server never speaks leaves the figure alone', async (t) => {
  const silent = await backendFor(t, startBackend((s) => s.resume()));
  const lb = await lbFor(t, {
    admin: { listen: '127.0.0.1:0' },
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'least_time', least_time: { measure: 'first_byte' }, servers: [{ name: 's', address: silent.address }] }],
  });
  const c = await connect(lb.port());
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  await waitFor(() => silent.accepted >= 2 && silent.open.size >= 1, 10_000, 'the connection and a probe to reach the server');
  t.same(await figures(adminPort(lb)), { s: null }, 'no figure: the server has said nothing');
});
