// The chaos soak: l4lb (bin/l4lb, workers: 2) with a plain, a TLS-terminate
// and a TLS-passthrough listener over three pools of backends in child
// processes; many checked streams at once while backends are SIGKILLed and
// restarted, turned into black holes, told to reset or stop reading, while
// SIGHUP reloads re-weight, add and remove servers and swap certificates, and
// while garbage clients come in bursts. At the end every stream is accounted
// for against l4lb's access log (see account.js).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync, copyFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { freePort, killAll, startL4lb, startNode, waitForLine } from '../../lib/children.js';
import { Generator, Verifier, MODES, ORDERS, encodeHeader, prng } from './protocol.js';
import { account } from './account.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = resolve(HERE, '../../..');
const BACKEND = join(HERE, '..', 'backend.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const POOLS = [
  { name: 'plain', listener: 'plain', tls: false },
  { name: 'term', listener: 'term', tls: false },
  { name: 'pass', listener: 'pass', tls: true },
];
const BASE_SERVERS = 3;

/**
 * Runs the soak; resolves with its figures and findings. Options:
 * durationS, concurrency, seed, log (a function for progress lines).
 */
export async function runSoak({ durationS = 60, concurrency = 48, seed = Date.now() >>> 0, log = () => {}, stallMs = 6000 } = {}) {
  const rand = prng(seed);
  const dir = mkdtempSync(join(tmpdir(), 'l4lb-soak-'));
  const certs = join(dir, 'certs');
  const gen = spawnSync('bash', [join(ROOT, 'scripts', 'gen-test-certs.sh'), certs], { encoding: 'utf8', timeout: 60_000 });
  if (gen.status !== 0) throw new Error(`gen-test-certs.sh failed: ${gen.stderr}`);
  const ca = readFileSync(join(certs, 'ca.crt'));
  // The terminate listener's certificate: a file pair whose content reloads swap (a.test <-> b.test).
  const swapCert = (which) => {
    for (const ext of ['crt', 'key']) {
      copyFileSync(join(certs, `${which}.${ext}`), join(dir, `cur.${ext}.tmp`));
      renameSync(join(dir, `cur.${ext}.tmp`), join(dir, `cur.${ext}`));
    }
  };
  swapCert('a.test');

  const events = { kills: [], blackholes: [], reloads: 0, reloadsFailed: 0, certSwaps: 0, garbage: 0 };
  const backends = new Map(); // name -> { pool, port, child, pid, faulty, spare }
  const reports = []; // backend lines: { t, id, ..., backend, pid }
  let stopping = false;

  async function startBackend(b) {
    const args = [b.name, String(b.port)];
    if (b.tls) args.push('--tls', join(certs, 'backend.test.crt'), join(certs, 'backend.test.key'));
    for (let attempt = 0; ; attempt++) {
      const child = startNode(BACKEND, args, { name: `backend ${b.name}` });
      try {
        await waitForLine(child, (line) => (line.includes('"listening"') ? true : undefined), 10_000);
      } catch (err) {
        if (attempt < 20 && !stopping) {
          await sleep(200);
          continue;
        }
        throw err;
      }
      b.child = child;
      b.pid = child.pid;
      let buf = '';
      child.stdout.on('data', (text) => {
        buf += text;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const o = JSON.parse(line);
            if (o.t !== 'listening') reports.push({ ...o, backend: b.name, pid: child.pid });
          } catch {
            // not ours
          }
        }
      });
      return;
    }
  }

  const cleanup = () => {
    stopping = true;
    killAll();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    // ---- backends -------------------------------------------------------------
    for (const pool of POOLS) {
      for (let i = 1; i <= BASE_SERVERS + 1; i++) {
        const spare = i > BASE_SERVERS;
        const name = spare ? `${pool.name}-spare` : `${pool.name}-${i}`;
        const b = { name, pool: pool.name, tls: pool.tls, port: await freePort(), faulty: false, spare, weight: 1, inConfig: !spare };
        backends.set(name, b);
        await startBackend(b);
      }
    }

    // ---- l4lb -----------------------------------------------------------------
    const ports = { plain: await freePort(), term: await freePort(), pass: await freePort(), admin: await freePort() };
    const configFile = join(dir, 'l4lb.json');
    const health = { interval: '500ms', timeout: '400ms', rise: 2, fall: 2 };
    const writeConfig = () => {
      const config = {
        admin: { listen: `127.0.0.1:${ports.admin}` },
        log: { level: 'info', access: true },
        workers: 2,
        listeners: [
          { name: 'plain', bind: `127.0.0.1:${ports.plain}`, pool: 'plain', timeouts: { handshake: '5s', idle: '60s' } },
          {
            name: 'term',
            bind: `127.0.0.1:${ports.term}`,
            pool: 'term',
            timeouts: { handshake: '5s', idle: '60s' },
            tls: { mode: 'terminate', certs: [{ cert: join(dir, 'cur.crt'), key: join(dir, 'cur.key') }] },
          },
          {
            name: 'pass',
            bind: `127.0.0.1:${ports.pass}`,
            pool: 'pass',
            timeouts: { handshake: '5s', idle: '60s' },
            tls: { mode: 'passthrough' },
            routes: [{ sni: 'backend.test', pool: 'pass' }],
          },
        ],
        pools: POOLS.map((p) => ({
          name: p.name,
          balance: p.name === 'plain' ? 'least_conn' : p.name === 'term' ? 'round_robin' : 'source_hash',
          retries: 3,
          timeouts: { connect: '1s', idle: '60s' },
          health: p.tls ? { ...health, kind: 'tls' } : { ...health, send: 'PING\r\n', expect: 'PONG' },
          servers: [...backends.values()]
            .filter((b) => b.pool === p.name && b.inConfig)
            .map((b) => ({ name: b.name, address: `127.0.0.1:${b.port}`, weight: b.weight })),
        })),
      };
      writeFileSync(`${configFile}.tmp`, JSON.stringify(config, null, 2));
      renameSync(`${configFile}.tmp`, configFile);
    };
    writeConfig();
    const lb = startL4lb(ROOT, ['run', '--config', configFile, '--drain-timeout', '2s'], { name: 'l4lb' });
    const access = [];
    const lbLines = { reloaded: 0, reloadFailed: 0, errors: [] };
    let lbExit = null;
    lb.once('exit', (code, signal) => (lbExit = { code, signal, at: Date.now() }));
    await waitForLine(lb, (line) => (line.includes('"started"') ? true : undefined), 20_000);
    let lbBuf = '';
    lb.stdout.on('data', (text) => {
      lbBuf += text;
      let nl;
      while ((nl = lbBuf.indexOf('\n')) >= 0) {
        const line = lbBuf.slice(0, nl);
        lbBuf = lbBuf.slice(nl + 1);
        let o;
        try {
          o = JSON.parse(line);
        } catch {
          continue;
        }
        if (o.termination !== undefined) {
          const end = typeof o.time === 'number' ? o.time : Date.parse(o.time);
          access.push({
            listener: o.listener,
            client: o.client,
            server: o.server,
            termination: o.termination,
            bytes_in: o.bytes_in,
            bytes_out: o.bytes_out,
            end,
            start: end - o.duration_ms,
            reason: o.reason,
            tried: o.tried,
          });
        } else if (o.msg === 'configuration reloaded') lbLines.reloaded++;
        else if (typeof o.msg === 'string' && o.msg.startsWith('reload failed')) {
          lbLines.reloadFailed++;
          lbLines.errors.push(o);
        } else if (o.level >= 50) lbLines.errors.push(o);
      }
    });
    const lbPid = lb.pid;
    await sleep(1500); // health settles
    const baseline = procStats(lbPid);
    log(`l4lb pid ${lbPid} baseline fds ${baseline.fds} rss ${(baseline.rssKb / 1024).toFixed(1)} MB; ${durationS}s, ${concurrency} streams at once, seed ${seed}`);

    // ---- faults -----------------------------------------------------------------
    const timers = [];
    const every = (ms, fn) => {
      const tick = async () => {
        if (stopping) return;
        try {
          await fn();
        } catch (err) {
          log(`fault loop error: ${err.stack}`);
        }
        if (!stopping) timers.push(setTimeout(tick, ms * (0.5 + rand.next())));
      };
      timers.push(setTimeout(tick, ms * rand.next()));
    };
    const faultable = (pool) => {
      const list = [...backends.values()].filter((b) => b.pool === pool && !b.spare);
      if (list.some((b) => b.faulty)) return null;
      return rand.pick(list);
    };
    let poolTurn = 0;
    // SIGKILL a base server (at most one faulty server per pool), restart it 0.5-2.5 s later on the same port.
    every(4000, async () => {
      const pool = POOLS[poolTurn++ % POOLS.length].name;
      const b = faultable(pool);
      if (b === null) return;
      b.faulty = true;
      const kill = { backend: b.name, pool, pid: b.pid, at: Date.now(), restartedAt: null };
      events.kills.push(kill);
      b.child.kill('SIGKILL');
      await sleep(rand.int(500, 2500));
      if (stopping) return;
      await startBackend(b);
      kill.restartedAt = Date.now();
      await sleep(1500); // rise 2 x 500 ms: up again before the next fault in this pool
      b.faulty = false;
    });
    // Black hole: a base server accepts and never answers for 2-4 s.
    every(9000, async () => {
      const b = faultable(rand.pick(POOLS).name);
      if (b === null) return;
      b.faulty = true;
      const hole = { backend: b.name, pool: b.pool, pid: b.pid, from: Date.now(), to: null };
      events.blackholes.push(hole);
      b.child.kill('SIGUSR1');
      await sleep(rand.int(2000, 4000));
      hole.to = Date.now();
      if (b.pid === hole.pid) b.child.kill('SIGUSR2');
      await sleep(1500);
      b.faulty = false;
    });
    // Reloads: re-weight, add or remove the spare, swap the certificate.
    every(2000, () => {
      for (const b of backends.values()) {
        if (b.spare) {
          if (rand.chance(0.5)) b.inConfig = !b.inConfig;
        } else if (rand.chance(0.5)) b.weight = rand.int(1, 5);
      }
      if (rand.chance(0.5)) {
        swapCert(events.certSwaps % 2 === 0 ? 'b.test' : 'a.test');
        events.certSwaps++;
      }
      writeConfig();
      lb.kill('SIGHUP');
      events.reloads++;
    });
    // Garbage clients in bursts.
    every(3000, async () => {
      const burst = rand.int(5, 30);
      events.garbage += burst;
      await Promise.all(Array.from({ length: burst }, () => garbageClient(ports[rand.pick(['plain', 'term', 'pass'])], rand)));
    });

    // ---- streams ----------------------------------------------------------------
    const streams = [];
    let nextId = 1;
    const deadline = Date.now() + durationS * 1000;
    const target = { plain: ports.plain, term: ports.term, pass: ports.pass, ca };
    let lastProgress = Date.now();
    const worker = async () => {
      while (Date.now() < deadline) {
        const s = streamSpec(nextId++, rand);
        streams.push(s);
        await runStream(s, target, rand, stallMs);
        if (Date.now() - lastProgress > 10_000) {
          lastProgress = Date.now();
          const moved = streams.reduce((n, x) => n + (x.sentUp ?? 0) + (x.gotDown ?? 0), 0);
          log(`${Math.round((deadline - Date.now()) / 1000)}s left: ${streams.length} streams, ${(moved / 1e9).toFixed(2)} GB, ${events.reloads} reloads, ${events.kills.length} kills`);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    stopping = true;
    for (const t of timers) clearTimeout(t);
    // Faults in progress end: restart what is down, end black holes.
    for (const b of backends.values()) {
      if (b.child.exitCode !== null || b.child.signalCode !== null) {
        stopping = false;
        await startBackend(b);
        stopping = true;
      }
      b.child.kill('SIGUSR2');
    }
    for (const h of events.blackholes) h.to ??= Date.now();
    await sleep(3000); // last access lines, closes and probes settle
    const after = procStats(lbPid);
    const metrics = await fetchText(`http://127.0.0.1:${ports.admin}/metrics`).catch((err) => `error: ${err.message}`);
    const restarts = /^l4lb_worker_restarts_total\s+(\S+)/m.exec(metrics);
    const result = account({
      streams,
      reports,
      access,
      events,
      lb: {
        pid: lbPid,
        exit: lbExit,
        restarts: restarts ? Number(restarts[1]) : null,
        baseline,
        after,
        reloadedLines: lbLines.reloaded,
        reloadFailedLines: lbLines.reloadFailed,
        errors: lbLines.errors.slice(0, 10),
      },
      durationS,
      seed,
      concurrency,
    });
    return result;
  } finally {
    cleanup();
  }
}

function procStats(pid) {
  try {
    const fds = readdirSync(`/proc/${pid}/fd`).length;
    const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { fds, rssKb: rss ? Number(rss[1]) : null };
  } catch {
    return { fds: null, rssKb: null };
  }
}

async function fetchText(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

/** Sizes: mostly small, some of a few MB, a few large ones that move most of the bytes. */
function size(rand) {
  const r = rand.next();
  if (r < 0.15) return rand.int(0, 64);
  if (r < 0.7) return rand.int(0, 256 * 1024);
  if (r < 0.95) return rand.int(256 * 1024, 4 * 1024 * 1024);
  return rand.int(4 * 1024 * 1024, 24 * 1024 * 1024);
}

function streamSpec(id, rand) {
  const r = rand.next();
  const mode = r < 0.03 ? MODES.reset : r < 0.05 ? MODES.stall : MODES.normal;
  const up = size(rand);
  const down = size(rand);
  const listener = rand.pick(['plain', 'plain', 'term', 'term', 'pass']);
  return {
    id,
    seed: rand.int(0, 0xffffffff),
    listener,
    up,
    down,
    mode,
    // Passthrough is TLS from our client to our backend: a Node TLS socket that
    // has sent its close_notify was seen to drop what still came in (up bytes
    // l4lb had relayed in full), so there the backend never ends first.
    // Half-close through l4lb is the same TCP relay as on the plain listener.
    order: listener === 'pass' ? ORDERS.client_first : rand.pick([ORDERS.client_first, ORDERS.backend_first, ORDERS.either]),
    pauses: rand.chance(0.3),
    faultAt: rand.int(0, Math.max(1, Math.floor((up + down) / 2))),
  };
}

/** One stream from the client's side; fills in s.outcome, s.localPort, s.start, s.end, byte counts. */
function runStream(s, target, rand, stallMs) {
  return new Promise((done) => {
    s.start = Date.now();
    const opts = { host: '127.0.0.1', port: target[s.listener], allowHalfOpen: true };
    let socket;
    if (s.listener === 'plain') socket = net.connect(opts);
    else if (s.listener === 'term')
      socket = tls.connect({
        ...opts,
        servername: 'a.test',
        ca: target.ca,
        // The certificate is swapped between a.test and b.test by reloads: both are right.
        checkServerIdentity: (_host, cert) => (['a.test', 'b.test'].includes(cert.subject?.CN) || /a\.test|b\.test/.test(cert.subjectaltname ?? '') ? undefined : new Error(`unexpected certificate ${cert.subjectaltname}`)),
      });
    else socket = tls.connect({ ...opts, servername: 'backend.test', ca: target.ca });
    const gen = new Generator(s.seed, 'up');
    const check = new Verifier(s.seed, 'down', s.down);
    s.sentUp = 0;
    let upDone = false;
    let gotEnd = false;
    let ended = false;
    let error = null;
    let waiting = false;
    let progress = Date.now();
    let connected = false;
    const watchdog = setInterval(() => {
      if (Date.now() - progress > stallMs) {
        s.stalled = true;
        socket.destroy();
      }
    }, 500);
    const maybeEnd = () => {
      if (ended || !upDone) return;
      if (s.order === ORDERS.backend_first && !gotEnd) return;
      ended = true;
      socket.end();
    };
    const pump = () => {
      while (s.sentUp < s.up && !socket.destroyed && !waiting) {
        const n = Math.min(s.up - s.sentUp, rand.int(1, 64 * 1024));
        s.sentUp += n;
        const ok = socket.write(gen.next(n));
        progress = Date.now();
        if (s.pauses && rand.chance(0.01)) {
          waiting = true;
          setTimeout(() => {
            waiting = false;
            pump();
          }, rand.int(20, 200));
          return;
        }
        if (!ok) return;
      }
      if (s.sentUp >= s.up && !upDone) {
        upDone = true;
        maybeEnd();
      }
    };
    socket.once('connect', () => (s.localPort = socket.localPort));
    socket.once(s.listener === 'plain' ? 'connect' : 'secureConnect', () => {
      connected = true;
      if (s.listener === 'term') s.cert = socket.getPeerCertificate()?.subject?.CN;
      progress = Date.now();
      socket.write(encodeHeader(s));
      pump();
    });
    socket.on('drain', pump);
    socket.on('data', (chunk) => {
      check.push(chunk);
      progress = Date.now();
      if (s.pauses && !socket.isPaused() && rand.chance(0.02)) {
        socket.pause();
        setTimeout(() => socket.resume(), rand.int(20, 300));
      }
    });
    socket.on('end', () => {
      gotEnd = true;
      maybeEnd();
    });
    socket.on('error', (err) => (error ??= err.code ?? err.message));
    socket.on('close', () => {
      clearInterval(watchdog);
      s.end = Date.now();
      s.gotDown = check.bytes;
      s.localPort ??= socket.localPort;
      s.connected = connected;
      const verdict = check.verdict();
      if (verdict === 'corrupt' || verdict === 'long') s.outcome = verdict;
      else if (s.stalled) s.outcome = 'stalled';
      else if (error !== null) s.outcome = connected ? `error:${error}` : `connect:${error}`;
      else if (!connected) s.outcome = 'closed_before_connect';
      else if (!gotEnd) s.outcome = 'no_fin';
      else if (verdict === 'short') s.outcome = 'truncated';
      else if (!upDone) s.outcome = 'up_unsent';
      else s.outcome = 'ok';
      done();
    });
  });
}

/** A client that sends junk (sometimes a TLS-looking start) and leaves in one of several ways. */
function garbageClient(port, rand) {
  return new Promise((done) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    socket.on('close', () => done());
    socket.on('data', () => {});
    socket.on('connect', () => {
      const junk = randomBytes(rand.int(0, 3000));
      if (rand.chance(0.3) && junk.length > 5) junk.set([0x16, 0x03, 0x01, junk[3], junk[4]], 0);
      socket.write(junk);
      const how = rand.int(0, 2);
      if (how === 0) socket.end();
      else if (how === 1) socket.destroy();
      else setTimeout(() => socket.destroy(), rand.int(0, 1500));
    });
    setTimeout(() => socket.destroy(), 5000).unref();
  });
}
