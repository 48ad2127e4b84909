/**
 * Signals from the first moment of `l4lb run`: a SIGHUP during start neither
 * kills the process nor is lost (one reload once running), a SIGTERM during
 * start stops it once started, a second one exits at once; and the forced
 * stop (a second SIGTERM, App.destroy()) closes everything the app owns,
 * including connections on listeners a reload removed.
 *
 * The CLI children here run "untraced" (env -i): tap's process hooks would
 * otherwise catch SIGHUP in the child before l4lb does and re-raise it.
 */
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { buildModel } from '../src/config/load.js';
import { cliFor, startCli, writeConfig } from './helpers/cli.js';
import { closed, connect, readLine, sleep, startL4lb, waitFor, whoAnswers } from './helpers/net.js';
import { lbFor, namedBackendsFor } from './helpers/lb.js';

// Node itself catches SIGTERM and SIGINT from its first instant (to restore the
// terminal, then die): the SIGHUP handler is the sign that l4lb's are in place
// (catchSignals installs all three at once).
const SIGHUP = 1;

/** Whether process `pid` has a handler for `signal` (Linux: the SigCgt mask in /proc). */
function catches(pid: number, signal: number): boolean {
  try {
    const m = /^SigCgt:\s+([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m !== null && ((BigInt(`0x${m[1]}`) >> BigInt(signal - 1)) & 1n) === 1n;
  } catch {
    return false; // not started yet, or gone
  }
}

const alive = (proc: ChildProcess): boolean => proc.exitCode === null && proc.signalCode === null;

function config(server: string, extraListeners: unknown[] = []) {
  return {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }, ...extraListeners],
    pools: [{ name: 'p', servers: [{ name: 'a', address: server }], health: { interval: '1h' } }],
  };
}

t.test('SIGHUP from the moment a handler exists until "started" neither kills l4lb nor is lost: it reloads once running', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const { file, cleanup } = writeConfig(config(a!.address));
  t.teardown(cleanup);
  let started = false;
  let sent = 0;
  const spawnedAt = performance.now();
  let handlerAfterMs = -1;
  const lb = await startCli(file, [], process.env, {
    untraced: true,
    onSpawn: (proc) => {
      void (async () => {
        // Bounded: 30 s of 2 ms steps at most.
        for (let i = 0; i < 15_000 && !started && alive(proc); i++) {
          if (catches(proc.pid!, SIGHUP)) {
            if (handlerAfterMs < 0) handlerAfterMs = performance.now() - spawnedAt;
            proc.kill('SIGHUP');
            sent++;
          }
          await sleep(2);
        }
      })();
    },
  });
  started = true;
  const startedAfterMs = performance.now() - spawnedAt;
  t.teardown(() => lb.kill());
  t.comment(`handler after ${handlerAfterMs.toFixed(0)} ms, "started" after ${startedAfterMs.toFixed(0)} ms; ${sent} SIGHUPs sent`);
  t.ok(sent > 0, 'SIGHUPs were sent during start');
  await lb.waitForLine((l) => l.msg === 'configuration reloaded');
  const at = (msg: string): number => lb.lines.findIndex((l) => l.msg === msg);
  t.ok(at('reload signal received during start') > at('started'), 'the SIGHUP held during start is acted on once running');
  t.ok(at('configuration reloaded') > at('started'));
  t.ok(alive(lb.proc), 'still running');
  t.equal(await whoAnswers(lb.port('front')), 'a', 'and serving');
  lb.proc.kill('SIGTERM');
  t.equal(await lb.exited(), 0);
});

t.test('a SIGTERM during start stops l4lb once start has finished, exit 0', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const { file, cleanup } = writeConfig(config(a!.address));
  t.teardown(cleanup);
  let sent = false;
  const lb = await startCli(file, [], process.env, {
    untraced: true,
    onSpawn: (proc) => {
      void (async () => {
        for (let i = 0; i < 15_000 && !sent && alive(proc); i++) {
          if (catches(proc.pid!, SIGHUP)) {
            proc.kill('SIGTERM');
            sent = true;
          }
          await sleep(2);
        }
      })();
    },
  });
  t.teardown(() => lb.kill());
  t.equal(await lb.exited(), 0, 'exits 0');
  t.match(lb.lines.find((l) => l.msg === 'stop signal received during start'), { signal: 'SIGTERM' });
  t.ok(lb.lines.some((l) => l.msg === 'stopped'), 'after a graceful stop');
});

t.test('a second SIGTERM during start exits at once with status 1', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const { file, cleanup } = writeConfig(config(a!.address));
  t.teardown(cleanup);
  let proc: ChildProcess | undefined;
  let output = '';
  const starting = startCli(file, [], process.env, {
    untraced: true,
    onSpawn: (p) => {
      proc = p;
      p.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      p.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      void (async () => {
        for (let i = 0; i < 15_000 && alive(p); i++) {
          if (catches(p.pid!, SIGHUP)) {
            p.kill('SIGTERM');
            await sleep(20);
            p.kill('SIGTERM');
            return;
          }
          await sleep(2);
        }
      })();
    },
  });
  t.teardown(() => proc?.kill('SIGKILL'));
  await t.rejects(starting, /l4lb exited \(1\) first/, 'it never reports "started"');
  t.equal(proc!.exitCode, 1);
  t.match(output, /second (SIGTERM )?(stop signal )?during start/);
});

t.test('a second SIGTERM closes a connection on a listener a reload removed, and l4lb exits', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await cliFor(t, config(a!.address, [{ name: 'old', bind: '127.0.0.1:0', pool: 'p' }]), ['--drain-timeout', '60s'], process.env, { untraced: true });
  const onOld = await connect(lb.port('old'));
  t.teardown(() => onOld.destroy());
  t.equal(await readLine(onOld), 'a');

  writeFileSync(lb.file, JSON.stringify(config(a!.address)));
  lb.proc.kill('SIGHUP');
  await lb.waitForLine((l) => l.msg === 'configuration reloaded');
  t.match(lb.lines.find((l) => l.msg === 'configuration reloaded'), { listeners_removed: ['old'] });
  onOld.write('still here\n');
  t.equal(await readLine(onOld), 'still here', 'the retired listener keeps its connection');

  lb.proc.kill('SIGTERM');
  await lb.waitForLine((l) => l.msg === 'draining');
  await sleep(200);
  t.notOk(onOld.destroyed, 'draining waits for it (60 s)');
  lb.proc.kill('SIGTERM');
  await closed(onOld, 10_000);
  t.pass('the second SIGTERM closed it');
  t.equal(await lb.exited(10_000), 0, 'and l4lb exits');
  t.match(
    lb.lines.find((l) => l.msg === 'connection' && l.listener === 'old'),
    { termination: 'shutdown' },
    'its access line says why',
  );
});

t.test('App.destroy() ends sessions on current and retired listeners, stops probes, closes the admin server; a second call is the same', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const raw = (extra: unknown[]) => ({
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }, ...extra],
    pools: [{ name: 'p', servers: [{ name: 'a', address: a!.address }], health: { interval: '100ms' } }],
  });
  const lb = await startL4lb(raw([{ name: 'old', bind: '127.0.0.1:0', pool: 'p' }]));
  t.teardown(() => lb.app.destroy());
  const onOld = await connect(lb.port('old'));
  t.teardown(() => onOld.destroy());
  await readLine(onOld);
  const onFront = await connect(lb.port('front'));
  t.teardown(() => onFront.destroy());
  await readLine(onFront);
  await lb.app.reload(await buildModel(raw([])));
  t.equal(lb.app.connections, 2);
  const frontPort = lb.port('front');

  const first = lb.app.destroy();
  t.equal(lb.app.destroy(), first, 'idempotent: the same promise');
  await first;
  await Promise.all([closed(onOld), closed(onFront)]);
  t.pass('both connections are closed');
  t.equal(lb.app.phase, 'stopped');
  t.equal(lb.app.admin!.address(), null, 'the admin server is closed');
  const probes = a!.accepted;
  await sleep(400);
  t.ok(a!.accepted - probes <= 1, 'probes have stopped (interval 100ms)');
  await t.rejects(lb.app.reload(await buildModel(raw([]))), /cannot reload while/);
  await t.rejects(connect(frontPort), { code: 'ECONNREFUSED' });
  t.same(
    lb.lines.filter((l) => l.msg === 'connection').map((l) => l.termination),
    ['shutdown', 'shutdown'],
  );
  await lb.stop(); // a graceful stop after the forced one returns at once
});

t.test('a graceful stop in progress ends at once when destroy() is called', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await lbFor(t, config(a!.address));
  const s = await connect(lb.port('front'));
  t.teardown(() => s.destroy());
  await readLine(s);
  const stopping = lb.app.stop(60_000);
  await waitFor(() => lb.app.phase === 'draining');
  await lb.app.destroy();
  await stopping;
  t.equal(lb.app.phase, 'stopped');
  await closed(s);
});

