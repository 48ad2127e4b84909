/**
 * The chaos soak (benchmarks/soak), 20 s of it: l4lb run as an operator runs
 * it (bin/l4lb, workers: 2) with plain, TLS-terminate and passthrough
 * listeners, while backends are killed, black-holed, reset and stalled,
 * reloads re-weight, add and remove servers and swap certificates, and
 * garbage clients come in bursts. `npm run soak` is the long version.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { opensslMissing } from './helpers/certs.js';
import { need } from './helpers/requirements.js';

const RUN = fileURLToPath(new URL('../benchmarks/soak/run.js', import.meta.url));

interface SoakResult {
  streams: number;
  ok: number;
  reloads: number;
  reloads_logged: number;
  kills: number;
  gb_moved: number;
  failed_by_cause: Record<string, number>;
  findings: unknown[];
  l4lb_findings: string[];
  l4lb: { exit: unknown; worker_restarts: number | null };
  pass: boolean;
}

t.test('a 20 s soak under chaos loses, corrupts and duplicates nothing, and every failure has a cause the harness made', async (t) => {
  if (!need(t, opensslMissing)) return;
  // A process group of its own: teardown reaches l4lb and every backend even if the harness hangs.
  const child = spawn(process.execPath, [RUN, '--duration', '20', '--concurrency', '24', '--json'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  t.teardown(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const last = out.trim().split('\n').pop() ?? '';
  let result: SoakResult;
  try {
    result = JSON.parse(last) as SoakResult;
  } catch {
    t.fail(`the soak printed no result (exit ${code}): ${err.slice(-2000)}`);
    return;
  }
  t.comment(`soak: ${result.gb_moved} GB, ${result.streams} streams (${result.ok} ok), ${result.reloads} reloads, ${result.kills} kills, failures ${JSON.stringify(result.failed_by_cause)}`);
  t.same(result.findings, [], 'no stream was lost, corrupted, duplicated, unlogged or failed without a cause');
  t.same(result.l4lb_findings, [], 'l4lb never restarted, its fds came back to the baseline, every reload succeeded');
  t.equal(result.l4lb.exit, null, 'l4lb ran through the whole soak');
  t.equal(result.l4lb.worker_restarts, 0, 'no worker thread restarted');
  t.ok(result.streams >= 50, `many streams ran (${result.streams})`);
  t.ok(result.reloads >= 4 && result.reloads_logged === result.reloads, `reloads happened and each was logged (${result.reloads_logged}/${result.reloads})`);
  t.ok(result.kills >= 2, `backends were killed (${result.kills})`);
  t.equal(code, 0, 'the soak passed');
});
