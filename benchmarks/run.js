#!/usr/bin/env node
// One benchmark run: start the backends and every target, measure each
// scenario against each target over several interleaved rounds, print the
// medians and ratios, and write benchmarks/results/latest.json.
//
//   npm run bench                      # default, about 2 minutes
//   npm run bench -- --quick           # smoke test, a few seconds per target
//   node benchmarks/run.js --duration 5 --rounds 5 --no-access-log
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuSeconds, killAll, runNodeJson } from './lib/children.js';
import { formatReport, summarise } from './report.js';
import { createTargets, startBackends } from './targets.js';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' }, // seconds per measurement
    rounds: { type: 'string' },
    'no-access-log': { type: 'boolean', default: false },
    targets: { type: 'string' }, // comma-separated subset, e.g. direct,bare
    baseline: { type: 'string' }, // a built checkout of another version: adds the target l4lb@baseline
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log(
    'usage: node benchmarks/run.js [--quick] [--duration SECONDS] [--rounds N] [--no-access-log] [--targets direct,bare,l4lb,l4lb+log]\n' +
      '                              [--baseline DIR]   (a built checkout of another version, measured as l4lb@baseline)',
  );
  process.exit(0);
}

const quick = flags.quick;
const durationMs = Math.round(Number(flags.duration ?? (quick ? 0.5 : 2.5)) * 1000);
const rounds = Number(flags.rounds ?? (quick ? 1 : 3));
const mbytes = quick ? 128 : 1024; // throughput cap; the stream also stops after durationMs
if (!(durationMs >= 100 && durationMs <= 60_000) || !(rounds >= 1 && rounds <= 20)) {
  console.error('--duration must be 0.1..60 seconds and --rounds 1..20');
  process.exit(2);
}

/** What load.js runs, against which backend service. */
const SCENARIOS = [
  { name: 'upload', service: 'sink', args: ['--mbytes', String(mbytes)] },
  { name: 'download', service: 'source', args: ['--mbytes', String(mbytes)] },
  { name: 'connect', service: 'echo', args: ['--concurrency', '32'] },
  { name: 'latency', service: 'echo', args: ['--concurrency', '16'] },
];

// Children die with us, however we end.
process.on('exit', killAll);
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping`);
    process.exit(code);
  });
}

/** One load.js run against one target; adds the CPU the proxy process used meanwhile. */
async function measure(scenario, endpoint, ms) {
  const args = [scenario.name, '--port', String(endpoint.port), '--duration', String(ms), ...scenario.args];
  const cpuBefore = cpuSeconds(endpoint.pid);
  const started = process.hrtime.bigint();
  const result = await runNodeJson(here('./load.js'), args, ms + 20_000);
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpuAfter = cpuSeconds(endpoint.pid);
  // Wall time includes load.js start-up (~50 ms), so this slightly understates the busy share.
  const cpu = cpuBefore != null && cpuAfter != null ? cpuAfter - cpuBefore : null;
  return { ...result, proxy_cpu_s: cpu, proxy_cpu_pct: cpu == null ? null : (cpu / wallSeconds) * 100 };
}

function describe(scenario, r) {
  if (scenario === 'upload' || scenario === 'download') return `${r.mbps.toFixed(0)} MB/s`;
  if (scenario === 'connect') return `${r.cps.toFixed(0)}/s${r.errors ? ` (${r.errors} errors)` : ''}`;
  return `${r.rps.toFixed(0)}/s p50 ${r.p50_us.toFixed(0)}µs p99 ${r.p99_us.toFixed(0)}µs`;
}

async function main() {
  let targets = createTargets({ accessLog: !flags['no-access-log'], baseline: flags.baseline });
  if (flags.targets) {
    const wanted = flags.targets.split(',');
    const unknown = wanted.filter((w) => !targets.some((t) => t.name === w));
    if (unknown.length) throw new Error(`unknown target(s): ${unknown.join(', ')}`);
    targets = targets.filter((t) => wanted.includes(t.name));
  }
  const names = targets.map((t) => t.name);
  if (names.some((n) => n.startsWith('l4lb')) && !existsSync(here('../dist/cli/main.js'))) {
    throw new Error('dist/cli/main.js is missing: build l4lb first (npm run build)');
  }
  const started = Date.now();
  const { backends, stop: stopBackends } = await startBackends();
  const endpoints = {};
  try {
    for (const t of targets) endpoints[t.name] = await t.start(backends);
    console.log(`targets: ${targets.map((t) => `${t.name} (${t.description})`).join('; ')}`);
    console.log(`${rounds} round(s) of ${durationMs} ms per scenario and target, interleaved; ${os.cpus().length} CPUs\n`);

    const results = {};
    for (const scenario of SCENARIOS) {
      results[scenario.name] = Object.fromEntries(names.map((n) => [n, []]));
      if (!quick) {
        // Warm-up: let every process JIT its hot path; results are dropped.
        for (const t of targets) await measure(scenario, endpoints[t.name][scenario.service], Math.min(500, durationMs));
      }
      for (let round = 0; round < rounds; round++) {
        // Rotate the order each round so no target always runs first or last.
        const order = names.map((_, i) => names[(i + round) % names.length]);
        const line = [];
        for (const name of order) {
          const r = await measure(scenario, endpoints[name][scenario.service], durationMs);
          results[scenario.name][name].push(r);
          line.push(`${name} ${describe(scenario.name, r)}`);
        }
        console.log(`${scenario.name.padEnd(8)} round ${round + 1}/${rounds}: ${line.join(' | ')}`);
      }
    }

    const summary = summarise(results, names);
    console.log(`\n${formatReport(summary, names)}`);
    const logTarget = targets.find((t) => t.name === 'l4lb+log');
    const out = {
      date: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model ?? null,
      options: { quick, duration_ms: durationMs, rounds, throughput_cap_mbytes: mbytes },
      targets: targets.map((t) => ({ name: t.name, description: t.description })),
      headline: 'l4lb',
      ...summary,
      access_log_lines: logTarget ? logTarget.logLines : null,
      rounds: results,
      elapsed_s: (Date.now() - started) / 1000,
    };
    mkdirSync(here('./results'), { recursive: true });
    writeFileSync(here('./results/latest.json'), JSON.stringify(out, null, 2) + '\n');
    console.log(`\nwrote benchmarks/results/latest.json (${out.elapsed_s.toFixed(0)} s)`);
  } finally {
    for (const t of targets) await t.stop().catch(() => {});
    await stopBackends();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`bench failed: ${err.message}`);
    process.exit(1);
  },
);
