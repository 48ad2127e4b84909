#!/usr/bin/env node
// One benchmark run: build the C load generator and backend, start the
// backends and every target (direct, the bare Node proxy, l4lb, HAProxy and
// NGINX at 1 and N workers/threads), measure each scenario against each
// target over several interleaved rounds, then memory per idle connection;
// print the medians, the ratios and the issue's goals, and write
// benchmarks/results/latest.json (and, with --write-results, RESULTS.md).
//
//   npm run bench                      # default, about 5 minutes
//   npm run bench -- --quick           # smoke test, about a minute
//   npm run bench -- --write-results   # a full run that also rewrites benchmarks/RESULTS.md
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { makeCerts } from './lib/certs.js';
import { killAll, runJson, treeCpuSeconds } from './lib/children.js';
import { buildTools } from './lib/ctools.js';
import { fileLimit, measureIdle } from './lib/idle.js';
import { findHaproxy, findNginx, opensslVersion } from './lib/peers.js';
import { formatMarkdown, formatText, summarise, FIGURES } from './report.js';
import { createTargets, startBackends } from './targets.js';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const USAGE = `usage: node benchmarks/run.js [--quick] [--duration SECONDS] [--rounds N] [--targets a,b,...] [--scenarios a,b,...]
                              [--memory-connections N] [--access-log] [--baseline DIR] [--write-results]
  scenarios: bulk-1, bulk-4, connect, pingpong, fixed-rate, tls-rsa, tls-ecdsa, memory
  targets:   direct, bare, l4lb-1w, l4lb-Nw, haproxy-1t, haproxy-Nt, nginx-1w, nginx-Nw (N = cores),
             l4lb@baseline (with --baseline DIR), l4lb+log (with --access-log)`;

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' }, // seconds per measurement
    rounds: { type: 'string' },
    targets: { type: 'string' }, // comma-separated subset
    scenarios: { type: 'string' }, // comma-separated subset
    'memory-connections': { type: 'string' },
    'access-log': { type: 'boolean', default: false }, // adds l4lb+log (N workers, access log on)
    baseline: { type: 'string' }, // a built checkout of another version: adds the target l4lb@baseline
    'write-results': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log(USAGE);
  process.exit(0);
}

const quick = flags.quick;
const cores = os.availableParallelism();
const durationMs = Math.round(Number(flags.duration ?? (quick ? 0.3 : 1.25)) * 1000);
const rounds = Number(flags.rounds ?? (quick ? 1 : 3));
const rampMs = quick ? 100 : 300; // bulk: streams run this long before bytes are counted
const warmMs = quick ? 0 : 200; // every target, every scenario, before the first round; dropped
const memoryConnections = Number(flags['memory-connections'] ?? (quick ? 500 : 4000));
const settleMs = quick ? 500 : 1000;
if (!(durationMs >= 100 && durationMs <= 60_000) || !(rounds >= 1 && rounds <= 20) || !(Number.isInteger(memoryConnections) && memoryConnections >= 1)) {
  console.error(`--duration must be 0.1..60 seconds, --rounds 1..20, --memory-connections a positive integer\n${USAGE}`);
  process.exit(2);
}
if (flags['write-results'] && quick) {
  console.error('--write-results records a full run: drop --quick');
  process.exit(2);
}

/** What the load generator runs, against which service of a target. */
const SCENARIOS = [
  { name: 'bulk-1', service: 'duplex', args: ['bulk', '--concurrency', '1', '--ramp', String(rampMs)], extraMs: rampMs },
  { name: 'bulk-4', service: 'duplex', args: ['bulk', '--concurrency', '4', '--ramp', String(rampMs)], extraMs: rampMs },
  { name: 'connect', service: 'rr', args: ['connect', '--concurrency', '32'] },
  { name: 'pingpong', service: 'echo', args: ['pingpong', '--concurrency', '16', '--size', '64'] },
  { name: 'fixed-rate', service: 'echo', args: ['pingpong', '--concurrency', '16', '--size', '64', '--rate', '5000'] },
  { name: 'tls-rsa', service: 'tls-rsa', args: ['tls', '--concurrency', '16'] },
  { name: 'tls-ecdsa', service: 'tls-ecdsa', args: ['tls', '--concurrency', '16'] },
];
const SCENARIO_NAMES = [...SCENARIOS.map((s) => s.name), 'memory'];

// Children die with us, however we end.
process.on('exit', killAll);
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping`);
    process.exit(code);
  });
}

/** Machine-wide busy CPU seconds so far (all cores), from /proc/stat. */
function machineBusySeconds() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - f[3] - f[4]) / 100; // minus idle and iowait; USER_HZ is 100
  } catch {
    return null;
  }
}

function describe(scenario, r) {
  if (scenario.startsWith('bulk')) return `${r.mbps.toFixed(0)} MB/s`;
  if (scenario === 'connect' || scenario.startsWith('tls')) return `${r.cps.toFixed(0)}/s${r.errors ? ` (${r.errors} errors)` : ''}`;
  return `${r.rps.toFixed(0)}/s p99 ${r.p99_us.toFixed(0)}µs`;
}

/** The versions and the machine, for the record. */
function environment(tools, haproxy, nginx) {
  const l4lbNode = here('../node_modules/node/bin/node');
  const nodeOf = (bin) => {
    const r = spawnSync(bin, ['-p', 'process.version + " (OpenSSL " + process.versions.openssl + ")"'], { encoding: 'utf8', timeout: 10_000 });
    return r.status === 0 ? r.stdout.trim() : null;
  };
  const git = (args) => {
    // --no-optional-locks: only read; never refresh the index of a checkout others work in.
    const r = spawnSync('git', ['--no-optional-locks', '-C', here('..'), ...args], { encoding: 'utf8', timeout: 10_000 });
    return r.status === 0 ? r.stdout.trim() : null;
  };
  const commit = git(['rev-parse', '--short', 'HEAD']);
  const dirty = git(['status', '--porcelain', '--untracked-files=no']);
  return {
    date: new Date().toISOString(),
    cpu_model: os.cpus()[0]?.model ?? null,
    cores,
    memory_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    loadavg_start: os.loadavg()[0],
    node_l4lb: existsSync(l4lbNode) ? nodeOf(l4lbNode) : null,
    node_run: `${process.version} (OpenSSL ${process.versions.openssl})`,
    haproxy: haproxy.path ? `HAProxy ${haproxy.version}${haproxy.openssl ? ` (${haproxy.openssl})` : ''}` : `not measured: ${haproxy.missing}`,
    nginx: nginx.path ? `NGINX ${nginx.version}${nginx.openssl ? ` (${nginx.openssl})` : ''}` : `not measured: ${nginx.missing}`,
    openssl: opensslVersion(),
    cc: tools.cc,
    loadgen_openssl: tools.openssl,
    l4lb_commit: commit ? `${commit}${dirty ? ' with uncommitted changes' : ''}` : null,
  };
}

async function main() {
  const started = Date.now();
  let tools;
  try {
    tools = buildTools();
  } catch (err) {
    console.error(err.message);
    process.exit(2);
  }
  const haproxy = findHaproxy();
  const nginx = findNginx();
  for (const [name, found] of [['haproxy', haproxy], ['nginx', nginx]]) if (found.missing) console.log(`${name}: ${found.missing}; its targets are skipped`);

  let scenarios = SCENARIOS;
  let withMemory = true;
  if (flags.scenarios) {
    const wanted = flags.scenarios.split(',');
    const unknown = wanted.filter((w) => !SCENARIO_NAMES.includes(w));
    if (unknown.length) throw new Error(`unknown scenario(s): ${unknown.join(', ')} (have: ${SCENARIO_NAMES.join(', ')})`);
    scenarios = SCENARIOS.filter((s) => wanted.includes(s.name));
    withMemory = wanted.includes('memory');
  }
  const dir = mkdtempSync(join(os.tmpdir(), 'l4lb-bench-run-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  let certs;
  if (!tools.tls) {
    console.log(`TLS scenarios skipped: the load generator has no TLS (${tools.tlsMissing})`);
    scenarios = scenarios.filter((s) => !s.name.startsWith('tls'));
  } else if (scenarios.some((s) => s.name.startsWith('tls'))) {
    certs = makeCerts(dir);
  }

  // Bound every child's life (see lib/children.js) by a generous estimate of the
  // run: three times that of 12 targets (more than a run has), plus 10 minutes.
  const perTargetS = scenarios.reduce((sum, s) => sum + (rounds + 1) * (durationMs + (s.extraMs ?? 0) + 500), 0) / 1000;
  const lifetimeS = 600 + 3 * 12 * perTargetS;
  const fdLimit = fileLimit().hard;
  const options = { cores, accessLog: flags['access-log'], baseline: flags.baseline, haproxy, nginx, certs, fdLimit, lifetimeS };
  let targets = createTargets(options);
  if (flags.targets) {
    const wanted = flags.targets.split(',');
    const unknown = wanted.filter((w) => !targets.some((t) => t.name === w));
    if (unknown.length) throw new Error(`unknown or unavailable target(s): ${unknown.join(', ')} (have: ${targets.map((t) => t.name).join(', ')})`);
    targets = targets.filter((t) => wanted.includes(t.name));
  }
  const names = targets.map((t) => t.name);
  if (targets.some((t) => t.kind === 'l4lb') && !existsSync(here('../dist/cli/main.js'))) {
    throw new Error('dist/cli/main.js is missing: build l4lb first (npm run build)');
  }
  const env = environment(tools, haproxy, nginx);

  const { backends, stop: stopBackends } = await startBackends(tools.backend, lifetimeS);
  const endpoints = {};
  const results = {};
  const memory = {};
  const failed = {};
  let load = null;
  try {
    // A target that does not start is reported and left out; the others are still measured.
    for (const t of [...targets]) {
      try {
        endpoints[t.name] = await t.start(backends);
      } catch (err) {
        failed[t.name] = err.message.slice(0, 600);
        console.error(`${t.name} did not start, left out: ${failed[t.name]}`);
        await t.stop().catch(() => {});
        targets = targets.filter((x) => x !== t);
        names.splice(names.indexOf(t.name), 1);
      }
    }
    const serving = (scenario) => names.filter((n) => endpoints[n][scenario.service]);
    const estimateS =
      scenarios.reduce((sum, s) => sum + serving(s).length * (rounds * (durationMs + (s.extraMs ?? 0) + 60) + (warmMs ? warmMs + (s.extraMs ?? 0) + 60 : 0)), 0) / 1000 +
      (withMemory ? targets.filter((t) => t.kind !== 'direct').length * (3 * settleMs + 1500) / 1000 : 0);
    console.log(`targets: ${targets.map((t) => `${t.name} (${t.description})`).join('; ')}`);
    console.log(
      `${rounds} round(s) of ${durationMs} ms per scenario and target, interleaved; ${cores} cores; about ${Math.ceil(estimateS / 60)} min\n`,
    );

    const rootPids = [...new Set([...Object.values(endpoints).flatMap((e) => Object.values(e).map((x) => x.pid)), backends.echo.pid])].filter(Boolean);
    const cpuAtStart = new Map(rootPids.map((p) => [p, treeCpuSeconds(p)]));
    const busyAtStart = machineBusySeconds();
    const measuringSince = Date.now();
    const selfAtStart = process.cpuUsage();
    let loadgenCpu = 0;

    /** One load generator run against one endpoint, with the CPU the proxy and the backend used meanwhile. */
    const measure = async (scenario, endpoint, ms) => {
      const args = [...scenario.args, '--port', String(endpoint.port), '--duration', String(ms)];
      const proxy0 = treeCpuSeconds(endpoint.pid);
      const backend0 = treeCpuSeconds(backends.echo.pid);
      const machine0 = machineBusySeconds();
      const self0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const r = await runJson(tools.loadgen, args, ms + 30_000);
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      loadgenCpu += r.cpu_total_s ?? 0;
      const delta = (before, pid) => (before == null ? null : treeCpuSeconds(pid) - before);
      const proxyCpu = delta(proxy0, endpoint.pid);
      const backendCpu = delta(backend0, backends.echo.pid);
      // Everything else the machine did meanwhile: other people's processes (and run.js itself).
      const self = process.cpuUsage(self0);
      const machine = machineBusySeconds();
      const other =
        machine == null || machine0 == null
          ? null
          : Math.max(0, machine - machine0 - (proxyCpu ?? 0) - (backendCpu ?? 0) - (r.cpu_total_s ?? 0) - (self.user + self.system) / 1e6);
      return { ...r, wall_s: wall, proxy_cpu_s: proxyCpu, backend_cpu_s: backendCpu, other_cpu_s: other };
    };

    for (const scenario of scenarios) {
      const list = serving(scenario);
      results[scenario.name] = Object.fromEntries(list.map((n) => [n, []]));
      // Warm-up: every process JITs or fills its pools; results are dropped.
      if (warmMs) for (const n of list) await measure(scenario, endpoints[n][scenario.service], warmMs);
      for (let round = 0; round < rounds; round++) {
        // Rotate the order each round so no target always runs first or last.
        const order = list.map((_, i) => list[(i + round) % list.length]);
        const line = [];
        for (const name of order) {
          const r = await measure(scenario, endpoints[name][scenario.service], durationMs);
          results[scenario.name][name].push(r);
          line.push(`${name} ${describe(scenario.name, r)}`);
        }
        console.log(`${scenario.name.padEnd(10)} round ${round + 1}/${rounds}: ${line.join(' | ')}`);
      }
    }

    // How busy the machine was with other work while we measured.
    const busy = machineBusySeconds();
    const ours =
      rootPids.reduce((sum, p) => sum + ((treeCpuSeconds(p) ?? 0) - (cpuAtStart.get(p) ?? 0)), 0) +
      loadgenCpu +
      (() => {
        const u = process.cpuUsage(selfAtStart);
        return (u.user + u.system) / 1e6;
      })();
    const measuredS = (Date.now() - measuringSince) / 1000;
    if (busy != null && busyAtStart != null && scenarios.length > 0) {
      load = {
        other_cpu_pct_of_machine: Math.max(0, ((busy - busyAtStart - ours) / (measuredS * cores)) * 100),
        benchmark_cpu_pct_of_machine: (ours / (measuredS * cores)) * 100,
      };
    }
  } finally {
    for (const t of targets) await t.stop().catch(() => {});
    await stopBackends();
  }

  if (withMemory) {
    console.log(`\nmemory per idle connection: ${memoryConnections} connections per target, each target alone`);
    for (const name of names) {
      const fresh = createTargets(options).find((t) => t.name === name);
      if (!fresh || fresh.kind === 'direct') continue;
      const r = await measureIdle(fresh, { n: memoryConnections, settleMs, lifetimeS }).catch((err) => {
        console.error(`memory     ${name}: failed: ${err.message.slice(0, 300)}`);
        return null;
      });
      if (!r) continue;
      memory[name] = r;
      console.log(`memory     ${name}: ${r.perConnKiB.toFixed(1)} KiB per connection (RSS ${(r.before.rssKiB / 1024).toFixed(1)} → ${(r.after.rssKiB / 1024).toFixed(1)} MiB)`);
    }
  }

  const summary = summarise(results, memory, names, cores);
  console.log(`\n${formatText(summary, names)}`);
  for (const [name, why] of Object.entries(failed)) console.log(`\n${name} did not start and is not in the tables: ${why}`);
  if (load) {
    console.log(
      `\nWhile measuring, this benchmark used ${load.benchmark_cpu_pct_of_machine.toFixed(0)}% of the machine's CPU time and other processes ${load.other_cpu_pct_of_machine.toFixed(0)}%.`,
    );
  }
  const elapsed = (Date.now() - started) / 1000;
  const out = {
    ...env,
    loadavg_end: os.loadavg()[0],
    command: commandLine(),
    options: { quick, duration_ms: durationMs, rounds, ramp_ms: rampMs, warm_ms: warmMs, memory_connections: memoryConnections },
    targets: targets.map((t) => ({ name: t.name, description: t.description })),
    failed_targets: failed,
    headline: summary.head,
    reference: summary.ref,
    load,
    ...summary,
    access_log_lines: targets.find((t) => t.name === 'l4lb+log')?.logLines ?? null,
    rounds: results,
    memory,
    elapsed_s: elapsed,
  };
  mkdirSync(here('./results'), { recursive: true });
  writeFileSync(here('./results/latest.json'), JSON.stringify(out, null, 2) + '\n');
  console.log(`\nwrote benchmarks/results/latest.json (${elapsed.toFixed(0)} s)`);
  if (flags['write-results']) {
    writeFileSync(here('./RESULTS.md'), resultsMarkdown(out, summary, names));
    console.log('wrote benchmarks/RESULTS.md');
  }
}

function commandLine() {
  return ['node', 'benchmarks/run.js', ...process.argv.slice(2)].join(' ');
}

/** What limits one figure, from the CPU split of the target in that scenario. */
function limitOf(summary, scenario, target, workers) {
  const c = summary.cpu[scenario];
  if (!c || c.proxy[target] == null) return null;
  const proxy = c.proxy[target];
  const gen = c.loadgen[target] ?? 0;
  const backend = c.backend[target] ?? 0;
  const other = c.other[target] ?? 0;
  const total = proxy + gen + backend + other;
  const parts = `${target} ${proxy.toFixed(0)}%, load generator ${gen.toFixed(0)}%, backend ${backend.toFixed(0)}%, other processes ${other.toFixed(0)}%`;
  if (total >= 0.9 * cores * 100) {
    return `the cores are full (${parts} of ${cores * 100}%)${other >= 20 ? '; other processes took a share large enough to distort it' : ''}`;
  }
  if (gen >= 90) return `the load generator's one thread is saturated (${parts})`;
  if (proxy >= 90 * workers) return `${target}'s ${workers} thread(s) are saturated (${parts})`;
  if (proxy >= 90) return `${target} uses about one core of the ${workers} it may use (${parts})`;
  return `no process is saturated: round trips bound it (${parts})`;
}

function resultsMarkdown(out, summary, names) {
  const md = formatMarkdown(summary, names);
  const { head, ref } = summary;
  const limits = [];
  for (const f of FIGURES.filter((x) => x.goal != null && x.scenario !== 'memory')) {
    const a = limitOf(summary, f.scenario, head, cores);
    const b = limitOf(summary, f.scenario, ref, cores);
    if (a || b) limits.push(`- ${f.label}: ${head}: ${a ?? 'not measured'}; ${ref}: ${b ?? 'not measured'}.`);
  }
  const single = cores > 1 ? limitOf(summary, 'connect', summary.one, 1) : null;
  if (single) limits.push(`- new connections/s, ${summary.one} (the scaling goal's denominator): ${single}.`);
  const lines = [
    '# Benchmark results',
    '',
    'The latest full run of the benchmark on the project\'s machine. Written by',
    '`node benchmarks/run.js --write-results` (`npm run bench -- --write-results`):',
    'do not edit by hand, run it again. benchmarks/README.md explains every figure.',
    '',
    `- date: ${out.date}`,
    `- command: \`${out.command}\``,
    `- machine: ${out.cpu_model}, ${out.cores} cores, ${out.memory_gib} GiB, ${out.kernel}; load average ${out.loadavg_start.toFixed(2)} at the start, ${out.loadavg_end.toFixed(2)} at the end`,
    out.load
      ? `- while measuring, the benchmark's processes used ${out.load.benchmark_cpu_pct_of_machine.toFixed(0)}% of the machine's CPU time and other processes ${out.load.other_cpu_pct_of_machine.toFixed(0)}%`
      : null,
    `- l4lb: commit ${out.l4lb_commit ?? 'unknown'}, on Node.js ${out.node_l4lb ?? out.node_run}`,
    `- ${out.haproxy}; ${out.nginx}; system ${out.openssl ?? 'openssl: not found'}`,
    `- load generator and backend: benchmarks/c/, built with ${out.cc ?? 'cc'} -O2, TLS client on ${out.loadgen_openssl ?? 'no OpenSSL'}`,
    `- ${out.options.rounds} rounds of ${out.options.duration_ms} ms per scenario and target, interleaved, order rotating; medians; idle memory with ${out.options.memory_connections} connections per target; ${out.elapsed_s.toFixed(0)} s in all`,
    ...Object.entries(out.failed_targets).map(([name, why]) => `- **${name} did not start** and is not in the tables: ${why.replace(/\s+/g, ' ')}`),
    '',
    `## Issue 13's goals: ${head} against ${ref}`,
    '',
    md.goals,
    '',
    'CPU: busy % of one core of the proxy + the load generator + the backend, and in brackets what other',
    `processes took meanwhile (the machine has ${cores * 100}%). The load generator and the backend share the`,
    'cores with the proxy under test.',
    '',
    '## Every figure',
    '',
    md.main,
    '',
    '## CPU',
    '',
    md.cost,
    '',
    md.gen,
    '',
    '## What limits each goal row',
    '',
    ...limits,
    '',
  ];
  return lines.filter((l) => l !== null).join('\n');
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`bench failed: ${err.message}`);
    process.exit(1);
  },
);
