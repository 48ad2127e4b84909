/**
 * Bounded fuzz of the PostgreSQL front end on real sockets: truncated,
 * oversized, mutated and random openings (SSLRequest, GSSENCRequest,
 * CancelRequest, StartupMessage, ClientHello-looking bytes, garbage),
 * written in random pieces, followed by FIN, reset or silence, against a
 * plain, a terminating and a passthrough listener. Every connection must
 * end with a termination from the contract's list and one access line, the
 * process must keep serving, and no connection or descriptor may be left.
 *
 * Reproduce a failure with FUZZ_SEED=<printed seed>.
 */
import { readdirSync } from 'node:fs';
import t from 'tap';
import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE, PROTOCOL_3_0 } from '../src/protocols/postgres/messages.js';
import { TERMINATIONS } from '../src/proxy/termination.js';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { accessLines, backendFor, lbFor } from './helpers/lb.js';
import { connect, sleep, waitFor } from './helpers/net.js';
import { startStandin, startup } from './helpers/pg-standin.js';
import { seededRandom } from './helpers/random.js';
import { need } from './helpers/requirements.js';

const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const PER_LISTENER = Number(process.env.FUZZ_ITERATIONS ?? 150);
const AT_ONCE = 16;

function packet(code: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(8 + body.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(code, 4);
  body.copy(b, 8);
  return b;
}

/** One opening: a valid packet or two, then mutated, cut or padded at random. */
function opening(rand: () => number): Buffer {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const random = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
  const base = pick([
    () => packet(SSL_REQUEST_CODE),
    () => packet(GSSENC_REQUEST_CODE),
    () => Buffer.concat([packet(GSSENC_REQUEST_CODE), packet(SSL_REQUEST_CODE)]),
    () => packet(CANCEL_REQUEST_CODE, random(8)),
    () => packet(CANCEL_REQUEST_CODE, random(Math.floor(rand() * 300))),
    () => startup(),
    () => packet(PROTOCOL_3_0 + 2, random(Math.floor(rand() * 64))),
    () => Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), random(Math.floor(rand() * 200))]),
    () => random(1 + Math.floor(rand() * 64)),
    () => Buffer.concat([packet(SSL_REQUEST_CODE), random(1 + Math.floor(rand() * 32))]),
  ])();
  const b = Buffer.from(base);
  const mutation = rand();
  if (mutation < 0.2 && b.length > 0) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256); // flip a byte
  else if (mutation < 0.35 && b.length >= 4) b.writeInt32BE(Math.floor(rand() * 2 ** 31) * (rand() < 0.5 ? 1 : -1), 0); // any length
  else if (mutation < 0.5) return b.subarray(0, Math.floor(rand() * b.length)); // cut short
  return b;
}

if (need(t, opensslMissing)) main();

function main(): void {
  const certs = testCerts();

  t.test(`${PER_LISTENER} fuzzed openings per listener (plain, terminate, passthrough) end cleanly (seed ${seed})`, async (t) => {
    t.comment(`FUZZ_SEED=${seed}`);
    const rand = seededRandom(seed);
    const pg = await backendFor(t, startStandin('pg', { tls: certs.pem('backend.test') }));
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        { name: 'plain', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', timeouts: { handshake: '300ms' } },
        { name: 'term', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', timeouts: { handshake: '300ms' }, tls: { mode: 'terminate', certs: [certs.pair('a.test')] } },
        { name: 'pass', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', timeouts: { handshake: '300ms' }, tls: { mode: 'passthrough' } },
      ],
      pools: [{ name: 'p', health: { interval: '60s' }, timeouts: { connect: '1s' }, servers: [{ address: pg.address }] }],
    });
    const fdsBefore = readdirSync('/proc/self/fd').length;
    const ports = ['plain', 'term', 'pass'].map((n) => lb.port(n));
    let started = 0;
    const runOne = async (port: number): Promise<void> => {
      const bytes = opening(rand);
      const after = rand();
      const pieces = 1 + Math.floor(rand() * 3);
      const c = await connect(port);
      c.on('error', () => {});
      c.on('data', () => {});
      started++;
      for (let i = 0; i < pieces; i++) {
        const part = bytes.subarray(Math.floor((i * bytes.length) / pieces), Math.floor(((i + 1) * bytes.length) / pieces));
        if (part.length > 0) c.write(part);
        if (pieces > 1) await sleep(Math.floor(rand() * 5));
      }
      if (after < 0.3) c.end();
      else if (after < 0.45) c.resetAndDestroy();
      // Else silence: l4lb's handshake deadline, the server, or we (after 2 s: a session that went through) end it.
      await new Promise<void>((resolve) => {
        if (c.destroyed) return resolve();
        const timer = setTimeout(() => {
          c.destroy();
          resolve();
        }, 2_000);
        c.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    };
    const jobs = ports.flatMap((p) => Array.from({ length: PER_LISTENER }, () => p));
    for (let i = 0; i < jobs.length; i += AT_ONCE) await Promise.all(jobs.slice(i, i + AT_ONCE).map(runOne));

    await waitFor(() => lb.app.listeners.every((l) => l.connections === 0), 10_000, 'every connection closed').catch((err: Error) => {
      const open = lb.app.listeners.map((l) => `${l.model.name}: ${l.connections}`).join(', ');
      const byListener = ['plain', 'term', 'pass'].map((n) => `${n}: ${accessLines(lb).filter((l) => l.listener === n).length} lines`).join(', ');
      throw new Error(`${err.message}: still open ${open}; ${byListener}; of ${PER_LISTENER} each`);
    });
    await waitFor(() => accessLines(lb).length + suppressed(lb) >= started, 10_000, 'a line (or a suppressed count) for each connection');
    const terminations = new Set(accessLines(lb).map((l) => l.termination));
    t.comment(`${started} connections; terminations seen: ${[...terminations].sort().join(', ')}`);
    t.ok([...terminations].every((x) => (TERMINATIONS as readonly unknown[]).includes(x)), 'every termination is one the contract lists');
    t.ok(terminations.size >= 4, 'the mix reached several outcomes');
    t.notOk(lb.lines.some((l) => typeof l.level === 'number' && l.level >= 50), 'nothing logged at error level');
    // Still serving: a well-formed client goes through the terminating listener.
    const ok = await connect(lb.port('plain'));
    ok.write(startup());
    const reply = await new Promise<Buffer>((resolve) => ok.once('data', resolve));
    t.equal(String.fromCharCode(reply[0]!), 'R', 'still serving');
    ok.destroy();
    await waitFor(() => lb.app.listeners.every((l) => l.connections === 0), 10_000, 'closed');
    await waitFor(() => readdirSync('/proc/self/fd').length <= fdsBefore + 2, 10_000, `descriptors back (${fdsBefore} before)`);
    t.pass(`descriptors back to ${readdirSync('/proc/self/fd').length} (${fdsBefore} before)`);
  });
}

function suppressed(lb: { lines: Array<Record<string, unknown>> }): number {
  return lb.lines.filter((l) => l.msg === 'connection lines suppressed').reduce((n, l) => n + Number(l.suppressed), 0);
}
