#!/usr/bin/env node
// What l4lb's PostgreSQL support costs, measured with pgbench, side by side
// in one run: one throw-away PostgreSQL cluster (TLS on), and in front of it
// nothing (direct, direct-tls), l4lb with `protocol: postgres` (plain,
// terminate, passthrough) and HAProxy in `mode tcp` (plain, and TLS passed
// through). For each pgbench mode (`-S`: select-only on persistent
// connections; `-S -C`: a new connection per transaction) every target is
// measured in interleaved rounds, the order rotating from round to round;
// the tables show the medians and ratios of figures from this run only.
//
//   npm run bench:pg                   # full run (see benchmarks/README.md for its length)
//   npm run bench:pg -- --quick        # smoke test, about a minute
//
// The cluster is started by the tests' own helper (test/helpers/postgres.ts,
// loaded through lib/ts-helpers.js): initdb as the `postgres` user when run
// as root, a free loopback port, fsync off, fast shutdown and nothing left
// behind. Every process started here is stopped at the end, also on an error
// or Ctrl-C; the servers also run under coreutils `timeout`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, killAll, processTree, startL4lb, startProcess, stop, waitForPorts } from './lib/children.js';
import { fileLimit } from './lib/idle.js';
import { findHaproxy, opensslVersion } from './lib/peers.js';
import { importTestHelper } from './lib/ts-helpers.js';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const USAGE = `usage: node benchmarks/pgbench.js [--quick] [--seconds S] [--rounds N] [--scale N] [--clients C] [--jobs J]
                                   [--targets a,b,...] [--modes select,connect]
       node benchmarks/pgbench.js --render benchmarks/results/pgbench.json   # the tables of a saved run again
  targets: direct, direct-tls, l4lb-plain, l4lb-terminate, l4lb-passthrough, haproxy-tcp, haproxy-tcp-tls
  modes:   select (pgbench -S), connect (pgbench -S -C: a new connection per transaction)`;

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' }, // pgbench -T
    rounds: { type: 'string' },
    scale: { type: 'string' }, // pgbench -i -s
    clients: { type: 'string' }, // pgbench -c
    jobs: { type: 'string' }, // pgbench -j
    targets: { type: 'string' },
    modes: { type: 'string' },
    render: { type: 'string' }, // print the report of a saved run (results/pgbench.json) and exit
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log(USAGE);
  process.exit(0);
}

const quick = flags.quick;
const cores = os.availableParallelism();
const seconds = Number(flags.seconds ?? (quick ? 3 : 10));
const rounds = Number(flags.rounds ?? (quick ? 1 : 3));
const scale = Number(flags.scale ?? (quick ? 1 : 10));
const clients = Number(flags.clients ?? 8);
const jobs = Number(flags.jobs ?? 2);
const warmS = quick ? 0 : 1; // every target, every mode, before the first round; dropped
const int = (n, lo, hi) => Number.isInteger(n) && n >= lo && n <= hi;
if (!int(seconds, 1, 600) || !int(rounds, 1, 20) || !int(scale, 1, 1000) || !int(clients, 1, 40) || !int(jobs, 1, clients)) {
  console.error(`--seconds must be 1..600, --rounds 1..20, --scale 1..1000, --clients 1..40, --jobs 1..clients\n${USAGE}`);
  process.exit(2);
}

/**
 * Where pgbench connects, and how. `via`: the process in between (none,
 * l4lb, HAProxy); `listener`: which of l4lb's listeners; `sslmode`: libpq's;
 * `serverTls`: whether PostgreSQL itself should see a TLS session (checked
 * before measuring, with what the client got).
 */
const TARGETS = [
  { name: 'direct', via: 'direct', sslmode: 'disable', serverTls: false, what: 'no proxy, no TLS' },
  { name: 'direct-tls', via: 'direct', sslmode: 'require', serverTls: true, what: "no proxy, PostgreSQL's own TLS" },
  { name: 'l4lb-plain', via: 'l4lb', listener: 'plain', sslmode: 'disable', serverTls: false, what: 'l4lb, protocol: postgres, no TLS' },
  {
    name: 'l4lb-terminate',
    via: 'l4lb',
    listener: 'terminate',
    sslmode: 'require',
    serverTls: false,
    what: 'l4lb, protocol: postgres, TLS terminated (a.test), plaintext to PostgreSQL',
  },
  {
    name: 'l4lb-passthrough',
    via: 'l4lb',
    listener: 'passthrough',
    sslmode: 'require',
    serverTls: true,
    what: "l4lb, protocol: postgres, TLS passthrough (end to end, PostgreSQL's certificate)",
  },
  { name: 'haproxy-tcp', via: 'haproxy', sslmode: 'disable', serverTls: false, what: 'HAProxy, mode tcp, no TLS' },
  { name: 'haproxy-tcp-tls', via: 'haproxy', sslmode: 'require', serverTls: true, what: 'HAProxy, mode tcp, TLS end to end (passed through)' },
];
const MODES = [
  { name: 'select', args: ['-S'], label: '-S' },
  { name: 'connect', args: ['-S', '-C'], label: '-S -C' },
];
/** The reference each TLS target is honestly compared with (same TLS work for the client). */
/** Above this (% of one core) of other processes' CPU during a target's runs, its figures are marked as disturbed. */
const DISTURBED_PCT = 25;
const TLS_PEER = { 'l4lb-terminate': 'direct-tls', 'l4lb-passthrough': 'haproxy-tcp-tls', 'haproxy-tcp-tls': 'direct-tls' };

const pick = (list, csv, what) => {
  if (!csv) return list;
  const wanted = csv.split(',');
  const unknown = wanted.filter((w) => !list.some((x) => x.name === w));
  if (unknown.length) {
    console.error(`unknown ${what}: ${unknown.join(', ')}\n${USAGE}`);
    process.exit(2);
  }
  return list.filter((x) => wanted.includes(x.name));
};
let targets = pick(TARGETS, flags.targets, 'target(s)');
const modes = pick(MODES, flags.modes, 'mode(s)');

// ---------------------------------------------------------------------------
// Stopping everything, however the run ends

/** What startPostgres(t, ...) registers its teardown on; we run them ourselves. */
const teardowns = [];
const owner = { teardown: (fn) => teardowns.push(fn) };
const stoppers = [];
let cleaning;
function cleanup() {
  return (cleaning ??= (async () => {
    for (const fn of stoppers.splice(0).reverse()) await fn().catch((err) => console.error(`cleanup: ${err.message}`));
    for (const fn of teardowns.splice(0).reverse()) await Promise.resolve(fn()).catch((err) => console.error(`cleanup: ${err.message}`));
  })());
}
// Last resort, synchronous: l4lb and HAProxy get SIGKILL here; the PostgreSQL
// helper has its own exit hook (SIGKILL, then removes the data directory).
process.on('exit', killAll);
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(signal, () => {
    if (cleaning) process.exit(code); // a second Ctrl-C: the exit hooks kill what is left
    console.error(`\n${signal}: stopping`);
    const bound = setTimeout(() => process.exit(code), 20_000);
    cleanup().finally(() => {
      clearTimeout(bound);
      process.exit(code);
    });
  });
}

// ---------------------------------------------------------------------------
// CPU time, from /proc

/**
 * CPU seconds used by a process tree: each process's own time plus the time
 * of the children it has reaped (PostgreSQL's backends end with their
 * connection, and with -C they come and go by the thousand; their time ends
 * up in the postmaster's cutime/cstime). Monotonic, so deltas are exact.
 */
function treeCpu(pid) {
  if (!pid) return null;
  let total = null;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total = (total ?? 0) + (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100; // USER_HZ 100
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** CPU seconds of this process's reaped children: every pgbench run ends up here. */
function reapedChildrenCpu() {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return null;
  }
}

/** Machine-wide busy CPU seconds so far (all cores), from /proc/stat. */
function machineBusy() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return (f.slice(0, 8).reduce((a, b) => a + b, 0) - f[3] - f[4]) / 100;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// The proxies

function logTail(child) {
  let tail = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text) => {
    tail = (tail + text).slice(-4000);
  });
  return () => tail;
}

/** One l4lb (bin/l4lb, built dist/, workers: auto, access log off) with the three listeners. */
async function startL4lbFor(pgPort, certs, dir, lifetimeS) {
  const listeners = ['plain', 'terminate', 'passthrough'];
  const ports = {};
  for (const l of listeners) ports[l] = await freePort();
  const tls = {
    plain: undefined,
    terminate: { mode: 'terminate', certs: [{ cert: join(certs, 'a.test.crt'), key: join(certs, 'a.test.key') }] },
    passthrough: { mode: 'passthrough' },
  };
  const config = {
    workers: 'auto',
    log: { level: 'info', access: false },
    listeners: listeners.map((l) => ({
      name: l,
      bind: `127.0.0.1:${ports[l]}`,
      pool: 'pg',
      protocol: 'postgres',
      ...(tls[l] ? { tls: tls[l] } : {}),
    })),
    pools: [{ name: 'pg', balance: 'round_robin', servers: [{ address: `127.0.0.1:${pgPort}` }] }],
  };
  const file = join(dir, 'l4lb.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  const child = startL4lb(here('..'), ['run', '--config', file, '--drain-timeout', '1s'], { name: 'l4lb', group: true, lifetimeS });
  stoppers.push(() => stop(child));
  const tail = logTail(child); // keep reading: a full pipe would stall l4lb
  try {
    await waitForPorts(child, Object.values(ports));
  } catch (err) {
    await new Promise((r) => setTimeout(r, 100));
    const why = tail()
      .split('\n')
      .filter((l) => l.trim() && (!l.startsWith('{') || /"level":"(warn|error|fatal)"/.test(l)));
    throw new Error(`${err.message} ${why.join('\n')}`);
  }
  return { pid: child.pid, ports };
}

/** HAProxy, mode tcp, nbthread = cores, one frontend (plaintext and TLS clients alike: it only relays bytes). */
async function startHaproxyFor(bin, pgPort, dir, lifetimeS) {
  const port = await freePort();
  const lines = [
    'global',
    `    nbthread ${cores}`,
    `    maxconn ${Math.floor((fileLimit().hard - 200) / 2)}`,
    'defaults',
    '    mode tcp',
    '    timeout connect 5s',
    '    timeout client 1h',
    '    timeout server 1h',
    '    retries 2',
    'frontend pg',
    `    bind 127.0.0.1:${port}`,
    '    default_backend pg',
    'backend pg',
    '    balance roundrobin',
    `    server s1 127.0.0.1:${pgPort} check inter 2s fall 3 rise 2`,
  ];
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, `${lines.join('\n')}\n`);
  const child = startProcess(bin.path, ['-f', file, '-db'], { name: 'haproxy', group: true, lifetimeS });
  stoppers.push(() => stop(child));
  child.stdout.resume();
  await waitForPorts(child, [port]);
  return { pid: child.pid, port };
}

// ---------------------------------------------------------------------------
// pgbench

/** pgbench's summary lines (PostgreSQL 14+ wording; -C prints "average connection time"). */
function parsePgbench(out, parseTps) {
  const num = (re) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : null;
  };
  return {
    tps: parseTps(out),
    latency_ms: num(/^latency average = ([\d.]+) ms/m),
    connection_ms: num(/^average connection time = ([\d.]+) ms/m),
    initial_connection_ms: num(/^initial connection time = ([\d.]+) ms/m),
    transactions: num(/^number of transactions actually processed: (\d+)/m),
    failed: num(/^number of failed transactions: (\d+)/m) ?? 0,
  };
}

const median = (xs) => {
  const s = xs.filter((x) => x != null && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// ---------------------------------------------------------------------------
// Report

const fmt = {
  tps: (x) => (x == null ? '–' : x >= 100 ? x.toFixed(0) : x.toFixed(1)),
  ms: (x) => (x == null ? '–' : x.toFixed(3)),
  delta: (x) => (x == null ? '–' : `${x >= 0 ? '+' : ''}${x.toFixed(3)}`),
  ratio: (x) => (x == null ? '–' : x.toFixed(2)),
  pct: (x) => (x == null ? '–' : x.toFixed(0)),
  us: (x) => (x == null ? '–' : x.toFixed(0)),
};

function summarise(results, names) {
  const out = {};
  for (const mode of modes) {
    const rows = {};
    for (const name of names) {
      const runs = (results[mode.name]?.[name] ?? []).filter((r) => !r.error);
      if (runs.length === 0) continue;
      const per = (f) => median(runs.map(f));
      rows[name] = {
        tps: per((r) => r.tps),
        latency_ms: per((r) => r.latency_ms),
        connection_ms: per((r) => r.connection_ms),
        tps_rounds: runs.map((r) => r.tps),
        proxy_cpu_pct: per((r) => (r.proxy_cpu_s == null ? null : (r.proxy_cpu_s / r.wall_s) * 100)),
        postgres_cpu_pct: per((r) => (r.postgres_cpu_s / r.wall_s) * 100),
        pgbench_cpu_pct: per((r) => (r.pgbench_cpu_s == null ? null : (r.pgbench_cpu_s / r.wall_s) * 100)),
        other_cpu_pct: per((r) => (r.other_cpu_s == null ? null : (r.other_cpu_s / r.wall_s) * 100)),
        proxy_us_per_txn: per((r) => (r.proxy_cpu_s == null || !r.transactions ? null : (r.proxy_cpu_s / r.transactions) * 1e6)),
        postgres_us_per_txn: per((r) => (r.transactions ? (r.postgres_cpu_s / r.transactions) * 1e6 : null)),
        errors: (results[mode.name]?.[name] ?? []).filter((r) => r.error).length,
      };
    }
    const ratio = (a, b) => (rows[a]?.tps != null && rows[b]?.tps ? rows[a].tps / rows[b].tps : null);
    const extra = (a, b) => (rows[a]?.latency_ms != null && rows[b]?.latency_ms != null ? rows[a].latency_ms - rows[b].latency_ms : null);
    for (const name of Object.keys(rows)) {
      Object.assign(rows[name], {
        vs_direct: ratio(name, 'direct'),
        vs_haproxy_tcp: ratio(name, 'haproxy-tcp'),
        vs_direct_tls: TARGETS.find((t) => t.name === name).sslmode === 'require' ? ratio(name, 'direct-tls') : null,
        extra_ms_vs_direct: extra(name, 'direct'),
        tls_peer: TLS_PEER[name] ?? null,
        vs_tls_peer: TLS_PEER[name] ? ratio(name, TLS_PEER[name]) : null,
        extra_ms_vs_tls_peer: TLS_PEER[name] ? extra(name, TLS_PEER[name]) : null,
      });
    }
    out[mode.name] = rows;
  }
  return out;
}

function markdownTables(out) {
  const { summary, cores: n } = out;
  const { clients: c, jobs: j, seconds: T } = out.options;
  const names = out.targets.map((t) => t.name);
  const shown = MODES.filter((m) => out.options.modes.includes(m.name));
  const parts = [];
  for (const mode of shown) {
    const rows = summary[mode.name];
    const connect = mode.name === 'connect';
    const head = [
      'target',
      'sslmode',
      'tps',
      'latency ms',
      ...(connect ? ['of which connect ms'] : []),
      '+ms vs direct',
      '÷ direct',
      '÷ haproxy-tcp',
      '÷ direct-tls',
      'CPU µs/txn: proxy / postgres',
      'CPU %: proxy / postgres / pgbench / other',
    ];
    const lines = [`| ${head.join(' | ')} |`, `|${head.map((h, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
    for (const name of names) {
      const r = rows[name];
      const t = TARGETS.find((x) => x.name === name);
      if (!r) {
        lines.push(`| ${name} | ${t.sslmode} | failed |${' |'.repeat(head.length - 3)}`);
        continue;
      }
      const disturbed = r.other_cpu_pct != null && r.other_cpu_pct > DISTURBED_PCT ? ' ⚠' : '';
      lines.push(
        `| ${name} | ${t.sslmode} | ${fmt.tps(r.tps)}${disturbed} | ${fmt.ms(r.latency_ms)} | ${connect ? `${fmt.ms(r.connection_ms)} | ` : ''}${fmt.delta(r.extra_ms_vs_direct)} | ` +
          `${fmt.ratio(r.vs_direct)} | ${fmt.ratio(r.vs_haproxy_tcp)} | ${fmt.ratio(r.vs_direct_tls)} | ${fmt.us(r.proxy_us_per_txn)} / ${fmt.us(r.postgres_us_per_txn)} | ` +
          `${r.proxy_cpu_pct == null ? '–' : fmt.pct(r.proxy_cpu_pct)} / ${fmt.pct(r.postgres_cpu_pct)} / ${fmt.pct(r.pgbench_cpu_pct)} / ${fmt.pct(r.other_cpu_pct)}` +
          `${r.errors ? ` (${r.errors} failed run${r.errors > 1 ? 's' : ''})` : ''} |`,
      );
    }
    parts.push(`**pgbench ${mode.label} -c ${c} -j ${j} -T ${T}**${connect ? ' (a new connection per transaction)' : ''}`, '', ...lines, '');
  }
  const pairs = [
    ['l4lb-terminate', 'direct-tls'],
    ['l4lb-passthrough', 'haproxy-tcp-tls'],
    ['l4lb-plain', 'haproxy-tcp'],
    ['l4lb-plain', 'direct'],
  ];
  const bullets = [];
  for (const [a, b] of pairs) {
    const per = shown
      .map((m) => {
        const ra = summary[m.name][a];
        const rb = summary[m.name][b];
        if (!ra?.tps || !rb?.tps) return null;
        return `${m.label}: tps × ${fmt.ratio(ra.tps / rb.tps)}, latency ${fmt.delta(ra.latency_ms - rb.latency_ms)} ms`;
      })
      .filter(Boolean);
    if (per.length) bullets.push(`- ${a} against ${b}: ${per.join('; ')}`);
  }
  parts.push(
    `CPU µs/txn: CPU time of the proxy's process tree and of PostgreSQL (postmaster and backends) per transaction. CPU %: busy % of`,
    `one core (the machine has ${n * 100}%) of the proxy, PostgreSQL, pgbench, and other processes on the machine meanwhile. Medians`,
    `over the rounds. ⚠: other processes took more than ${DISTURBED_PCT}% of a core during that target's runs, so its tps is as much`,
    "the machine's as the target's: compare its CPU µs/txn instead.",
    '',
  );
  if (bullets.length) parts.push(...bullets, '');
  return parts.join('\n');
}

/** The report of one run (`out` as written to results/pgbench.json). */
function renderMarkdown(out) {
  const o = out.options;
  const clientTls = [...new Set(out.targets.map((t) => t.client).filter((c) => c && c !== 'plaintext'))];
  return [
    `- date: ${out.date}; command: \`${out.command}\`; ${out.elapsed_s.toFixed(0)} s in all`,
    `- machine: ${out.cpu_model}, ${out.cores} cores, ${out.memory_gib} GiB, ${out.kernel}; load average ${out.loadavg_start.toFixed(2)} at the start, ${out.loadavg_end.toFixed(2)} at the end`,
    out.load
      ? `- while measuring, the benchmark's processes used ${out.load.benchmark_cpu_pct_of_machine.toFixed(0)}% of the machine's CPU time and other processes ${out.load.other_cpu_pct_of_machine.toFixed(0)}%`
      : null,
    `- ${out.postgres} (scale ${o.scale}, fsync off, shared_buffers 16MB, TLS with an EC P-256 certificate); ${out.pgbench}`,
    `- l4lb: commit ${out.l4lb_commit ?? 'unknown'}, on Node.js ${out.node_l4lb}, workers: auto (${out.cores}); ${out.haproxy}, nbthread ${out.cores}; system ${out.openssl ?? 'openssl: not found'}`,
    `- client TLS: ${clientTls.join(', ') || 'none'}`,
    `- ${o.rounds} round(s) of ${o.seconds} s per mode and target, interleaved, order rotating; medians${o.warm_s ? `; a ${o.warm_s} s warm-up per mode and target, dropped` : ''}`,
    ...Object.entries(out.failed_targets).map(([n, why]) => `- **${n} did not start** and is not in the tables: ${why.replace(/\s+/g, ' ')}`),
    '',
    markdownTables(out),
  ]
    .filter((l) => l !== null)
    .join('\n');
}

// ---------------------------------------------------------------------------

function environment(haproxy, pg, pgBin) {
  const l4lbNode = here('../node_modules/node/bin/node');
  const run = (bin, args) => {
    const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 10_000 });
    return r.status === 0 ? r.stdout.trim() : null;
  };
  const git = (args) => run('git', ['--no-optional-locks', '-C', here('..'), ...args]);
  const commit = git(['rev-parse', '--short', 'HEAD']);
  const dirty = git(['status', '--porcelain', '--untracked-files=no']);
  return {
    date: new Date().toISOString(),
    cpu_model: os.cpus()[0]?.model ?? null,
    cores,
    memory_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    loadavg_start: os.loadavg()[0],
    postgres: `PostgreSQL ${pg.version}`,
    pgbench: run(pgBin('pgbench'), ['--version']),
    node_l4lb: existsSync(l4lbNode) ? run(l4lbNode, ['-p', 'process.version + " (OpenSSL " + process.versions.openssl + ")"']) : null,
    haproxy: haproxy.path ? `HAProxy ${haproxy.version}${haproxy.openssl ? ` (${haproxy.openssl})` : ''}` : `not measured: ${haproxy.missing}`,
    openssl: opensslVersion(),
    l4lb_commit: commit ? `${commit}${dirty ? ' with uncommitted changes' : ''}` : null,
  };
}

async function main() {
  const started = Date.now();
  const pgHelper = await importTestHelper('postgres');
  const missing = pgHelper.postgresMissing();
  if (missing) throw new Error(missing);
  const haproxy = findHaproxy();
  if (haproxy.missing) {
    console.log(`haproxy: ${haproxy.missing}; its targets are skipped`);
    targets = targets.filter((t) => t.via !== 'haproxy');
  }
  if (targets.some((t) => t.via === 'l4lb') && !existsSync(here('../dist/cli/main.js'))) {
    throw new Error('dist/cli/main.js is missing: build l4lb first (npm run build)');
  }

  const runs = targets.length * modes.length;
  const estimateS = 20 + scale * 1.5 + runs * (rounds * (seconds + 0.4) + (warmS ? warmS + 0.4 : 0));
  const lifetimeS = Math.ceil(600 + 2 * estimateS);
  const dir = mkdtempSync(join(os.tmpdir(), 'l4lb-bench-pg-'));
  teardowns.push(() => rmSync(dir, { recursive: true, force: true }));
  try {
    const certs = join(dir, 'certs');
    const gen = spawnSync('bash', [here('../scripts/gen-test-certs.sh'), certs], { encoding: 'utf8', timeout: 60_000 });
    if (gen.status !== 0) throw new Error(`scripts/gen-test-certs.sh failed (${gen.status ?? gen.signal}): ${gen.stderr || gen.error}`);

    const cluster = await pgHelper.startPostgres(owner, {
      ssl: { cert: join(certs, 'backend.test.crt'), key: join(certs, 'backend.test.key') },
      // The helper's settings otherwise (fsync off, shared_buffers 16MB: the tables are read from the page
      // cache). Larger shared buffers made each new backend slower (page faults on the shared segment)
      // without raising -S: 256MB took -C from about 230 to 180 tps on the project's machine.
      lifetimeS,
    });
    const env = environment(haproxy, cluster, pgHelper.pgBin);
    console.log(`${env.postgres} on 127.0.0.1:${cluster.port} (ssl on, backend.test); pgbench -i -s ${scale}`);
    const init = await pgHelper.pgbenchInit(cluster, { scale, env: { PGSSLMODE: 'disable' }, timeoutMs: 120_000 + scale * 20_000 });
    if (init.status !== 0) throw new Error(`pgbench -i -s ${scale} failed: ${init.stderr.trim().slice(-1000)}`);

    // The proxies: a target that does not start is reported and left out.
    const failed = {};
    const endpoint = {};
    for (const t of targets.filter((x) => x.via === 'direct')) endpoint[t.name] = { port: cluster.port, pid: null };
    for (const [via, start] of [
      ['l4lb', () => startL4lbFor(cluster.port, certs, dir, lifetimeS)],
      ['haproxy', () => startHaproxyFor(haproxy, cluster.port, dir, lifetimeS)],
    ]) {
      const mine = targets.filter((t) => t.via === via);
      if (mine.length === 0) continue;
      try {
        const s = await start();
        for (const t of mine) endpoint[t.name] = { port: s.ports ? s.ports[t.listener] : s.port, pid: s.pid };
      } catch (err) {
        for (const t of mine) failed[t.name] = err.message.slice(0, 600);
        console.error(`${via} did not start, its targets are left out: ${err.message.slice(0, 600)}`);
      }
    }
    targets = targets.filter((t) => endpoint[t.name]);

    // Is each target what it says? What TLS the client got, and whether PostgreSQL saw TLS.
    const check = {};
    for (const t of targets) {
      const r = await pgHelper.psql({ host: '127.0.0.1', port: endpoint[t.name].port }, ['-At', '-c', '\\conninfo', '-c', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'], {
        env: { PGSSLMODE: t.sslmode },
      });
      if (r.status !== 0) throw new Error(`${t.name}: psql failed: ${r.stderr.trim()}`);
      const client = /SSL connection \(protocol: ([^,]+), cipher: ([^,]+)/.exec(r.stdout);
      const serverTls = /^t$/m.test(r.stdout);
      const clientTls = t.sslmode === 'require';
      if (Boolean(client) !== clientTls || serverTls !== t.serverTls) {
        throw new Error(`${t.name}: expected client TLS ${clientTls} and PostgreSQL TLS ${t.serverTls}, got ${Boolean(client)} and ${serverTls}: ${r.stdout.trim()}`);
      }
      check[t.name] = { client: client ? `${client[1]} ${client[2]}` : 'plaintext', postgres_sees: serverTls ? 'TLS' : 'plaintext' };
      console.log(`${t.name.padEnd(17)} ${t.what}; client: ${check[t.name].client}; PostgreSQL sees ${check[t.name].postgres_sees}`);
    }
    const names = targets.map((t) => t.name);
    const total = (modes.length * names.length * (rounds * (seconds + 0.4) + (warmS ? warmS + 0.4 : 0))) / 60;
    console.log(
      `\npgbench -c ${clients} -j ${jobs} -T ${seconds}, ${rounds} round(s) per mode and target, interleaved, order rotating; ${cores} cores; about ${total.toFixed(1)} min\n`,
    );

    /** One pgbench run against one target, with the CPU each party used meanwhile. */
    const measure = async (t, mode, s) => {
      const ep = endpoint[t.name];
      const pm = cluster.pid;
      const proxy0 = treeCpu(ep.pid);
      const pg0 = treeCpu(pm);
      const kids0 = reapedChildrenCpu();
      const machine0 = machineBusy();
      const self0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const r = await pgHelper.pgbench(
        { host: '127.0.0.1', port: ep.port },
        { clients, jobs, seconds: s, args: mode.args, env: { PGSSLMODE: t.sslmode }, timeoutMs: s * 1000 + 60_000 },
      );
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      await new Promise((res) => setTimeout(res, 50)); // the last backends exit and are reaped
      const d = (v0, v1) => (v0 == null || v1 == null ? null : v1 - v0);
      const proxy = d(proxy0, treeCpu(ep.pid));
      const postgres = d(pg0, treeCpu(pm));
      const pgbenchCpu = d(kids0, reapedChildrenCpu());
      const selfU = process.cpuUsage(self0);
      const machine = d(machine0, machineBusy());
      const other = machine == null ? null : Math.max(0, machine - (proxy ?? 0) - (postgres ?? 0) - (pgbenchCpu ?? 0) - (selfU.user + selfU.system) / 1e6);
      const parsed = parsePgbench(r.stdout, pgHelper.parseTps);
      const error =
        r.status !== 0 || parsed.tps == null
          ? `pgbench ${r.timedOut ? 'timed out' : `exited ${r.status ?? r.signal}`}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' / ')}`
          : null;
      return { ...parsed, error, wall_s: wall, proxy_cpu_s: proxy, postgres_cpu_s: postgres, pgbench_cpu_s: pgbenchCpu, other_cpu_s: other };
    };

    const results = {};
    const busyAtStart = machineBusy();
    const measuringSince = Date.now();
    for (const mode of modes) {
      results[mode.name] = Object.fromEntries(names.map((n) => [n, []]));
      // Warm-up: l4lb's JIT, PostgreSQL's caches; dropped.
      if (warmS) for (const t of targets) await measure(t, mode, warmS);
      for (let round = 0; round < rounds; round++) {
        const order = targets.map((_, i) => targets[(i + round) % targets.length]);
        const line = [];
        for (const t of order) {
          const r = await measure(t, mode, seconds);
          results[mode.name][t.name].push(r);
          const other = r.other_cpu_s == null ? '' : ` (other ${fmt.pct((r.other_cpu_s / r.wall_s) * 100)}%)`;
          line.push(r.error ? `${t.name} FAILED` : `${t.name} ${fmt.tps(r.tps)}${other}`);
          if (r.error) console.error(`${t.name} ${mode.label}: ${r.error}`);
        }
        console.log(`${mode.label.padEnd(6)} round ${round + 1}/${rounds} (tps, and CPU other processes took, % of one core): ${line.join(' | ')}`);
      }
    }
    const measuredS = (Date.now() - measuringSince) / 1000;
    const busyEnd = machineBusy();
    const ours = Object.values(results)
      .flatMap((m) => Object.values(m).flat())
      .reduce((s, r) => s + (r.proxy_cpu_s ?? 0) + (r.postgres_cpu_s ?? 0) + (r.pgbench_cpu_s ?? 0), 0);
    const load =
      busyAtStart == null || busyEnd == null
        ? null
        : {
            benchmark_cpu_pct_of_machine: (ours / (measuredS * cores)) * 100,
            other_cpu_pct_of_machine: Math.max(0, ((busyEnd - busyAtStart - ours) / (measuredS * cores)) * 100),
          };

    const summary = summarise(results, names);
    const elapsed = (Date.now() - started) / 1000;
    const command = ['npm run bench:pg', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' ');
    const out = {
      ...env,
      loadavg_end: os.loadavg()[0],
      command,
      options: { quick, seconds, rounds, scale, clients, jobs, warm_s: warmS, modes: modes.map((m) => m.name) },
      targets: targets.map((t) => ({ name: t.name, sslmode: t.sslmode, what: t.what, ...check[t.name] })),
      failed_targets: failed,
      load,
      summary,
      rounds: results,
      elapsed_s: elapsed,
    };
    const md = renderMarkdown(out);
    console.log(`\n${md}`);
    mkdirSync(here('./results'), { recursive: true });
    writeFileSync(here('./results/pgbench.json'), `${JSON.stringify(out, null, 2)}\n`);
    writeFileSync(here('./results/pgbench.md'), `${md}\n`);
    console.log(`wrote benchmarks/results/pgbench.json and pgbench.md (${elapsed.toFixed(0)} s)`);
  } finally {
    await cleanup();
  }
}

if (flags.render) {
  console.log(renderMarkdown(JSON.parse(readFileSync(flags.render, 'utf8'))));
  process.exit(0);
}

main().then(
  () => process.exit(0),
  async (err) => {
    console.error(`bench:pg failed: ${err.message}`);
    await cleanup();
    process.exit(1);
  },
);
