// Turning per-round results into medians, ratios, verdicts and the printed
// tables (text for the terminal, Markdown for RESULTS.md).

/**
 * The figures of the table: which scenario and result field each comes from,
 * which way is better, and the issue's goal for l4lb at N workers against
 * HAProxy at N threads (`goal`: a ratio; at least it when higher is better,
 * at most it otherwise).
 */
export const FIGURES = [
  { key: 'bulk1', scenario: 'bulk-1', field: 'mbps', label: 'bulk, 1 stream (MB/s, both ways)', higher: true, goal: 0.8 },
  { key: 'bulk4', scenario: 'bulk-4', field: 'mbps', label: 'bulk, 4 streams (MB/s, both ways)', higher: true, goal: 0.8 },
  { key: 'cps', scenario: 'connect', field: 'cps', label: 'new connections/s (32 B each way)', higher: true, goal: 0.5 },
  { key: 'rps', scenario: 'pingpong', field: 'rps', label: 'ping-pong at saturation (req/s)', higher: true, goal: 0.8 },
  { key: 'rps_p99', scenario: 'pingpong', field: 'p99_us', label: 'ping-pong at saturation, p99 (µs)', higher: false },
  { key: 'fixed_p50', scenario: 'fixed-rate', field: 'p50_us', label: 'ping-pong at a fixed rate, p50 (µs)', higher: false },
  { key: 'fixed_p99', scenario: 'fixed-rate', field: 'p99_us', label: 'ping-pong at a fixed rate, p99 (µs)', higher: false, goal: 1.5 },
  { key: 'fixed_p999', scenario: 'fixed-rate', field: 'p999_us', label: 'ping-pong at a fixed rate, p99.9 (µs)', higher: false },
  { key: 'tls_rsa', scenario: 'tls-rsa', field: 'cps', label: 'TLS 1.3 handshakes/s, RSA 2048', higher: true, goal: 0.8 },
  { key: 'tls_ecdsa', scenario: 'tls-ecdsa', field: 'cps', label: 'TLS 1.3 handshakes/s, ECDSA P-256', higher: true, goal: 0.8 },
  { key: 'idle_kib', scenario: 'memory', field: 'perConnKiB', label: 'memory per idle connection (KiB)', higher: false },
];

/** l4lb at N workers against itself at 1 worker, new connections/s: at least this (issue 13). */
export const SCALING_GOAL = 1.6;

/** How to express CPU per unit of work in each scenario: `rate` is the result field, `scale` the unit. */
export const COST_UNITS = {
  'bulk-1': { label: 'ms per GB', rate: (r) => r.mbps / 1e3, scale: 1e3 },
  'bulk-4': { label: 'ms per GB', rate: (r) => r.mbps / 1e3, scale: 1e3 },
  connect: { label: 'µs per connection', rate: (r) => r.cps, scale: 1e6 },
  pingpong: { label: 'µs per request', rate: (r) => r.rps, scale: 1e6 },
  'fixed-rate': { label: 'µs per request', rate: (r) => r.rps, scale: 1e6 },
  'tls-rsa': { label: 'µs per handshake', rate: (r) => r.cps, scale: 1e6 },
  'tls-ecdsa': { label: 'µs per handshake', rate: (r) => r.cps, scale: 1e6 },
};

export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

const ratio = (a, b) => (a != null && b ? a / b : null);
/** Judged on the ratio as printed (two decimals), so the table never contradicts itself. */
const round2 = (x) => Math.round(x * 100) / 100;
const meets = (r, goal, higher) => (r == null ? null : higher ? round2(r) >= goal : round2(r) <= goal);

/**
 * `rounds[scenario][target]`: the results of every round (load generator
 * output plus `proxy_cpu_s`, `backend_cpu_s`, `wall_s`); `memory[target]`:
 * idle-memory results. `cores`: N. Returns everything the tables need.
 */
export function summarise(rounds, memory, targetNames, cores) {
  const head = `l4lb-${cores}w`;
  const ref = `haproxy-${cores}t`;
  const one = 'l4lb-1w';
  const medians = {};
  for (const f of FIGURES) {
    medians[f.key] = {};
    for (const t of targetNames) {
      const list = f.scenario === 'memory' ? (memory?.[t] ? [memory[t]] : []) : (rounds[f.scenario]?.[t] ?? []);
      medians[f.key][t] = median(list.map((r) => r[f.field]));
    }
  }
  const ratios = {};
  for (const f of FIGURES) {
    const m = medians[f.key];
    const vsRef = ratio(m[head], m[ref]);
    ratios[f.key] = {
      vs_haproxy: vsRef,
      goal: f.goal ?? null,
      met: f.goal == null ? null : meets(vsRef, f.goal, f.higher),
      vs_1w: cores > 1 ? ratio(m[head], m[one]) : null,
      vs_nginx: ratio(m[head], m[`nginx-${cores}w`]),
      one_vs_bare: ratio(m[one], m.bare),
    };
  }
  const scalingRatio = cores > 1 ? ratio(medians.cps[head], medians.cps[one]) : null;
  const scaling = { ratio: scalingRatio, goal: SCALING_GOAL, met: meets(scalingRatio, SCALING_GOAL, true) };

  // CPU: of the proxy per unit of work, and the busy share (% of one core) of
  // the proxy, the load generator and the backend, medians over the rounds.
  const cpu = {};
  for (const scenario of Object.keys(rounds)) {
    const unit = COST_UNITS[scenario];
    cpu[scenario] = { unit: unit.label, cost: {}, proxy: {}, loadgen: {}, backend: {}, other: {} };
    for (const t of targetNames) {
      const list = rounds[scenario][t] ?? [];
      if (list.length === 0) continue;
      const busy = (field) => median(list.map((r) => (r[field] == null ? null : (r[field] / r.wall_s) * 100)));
      cpu[scenario].proxy[t] = busy('proxy_cpu_s');
      cpu[scenario].backend[t] = busy('backend_cpu_s');
      cpu[scenario].other[t] = busy('other_cpu_s');
      cpu[scenario].loadgen[t] = median(list.map((r) => r.cpu_pct));
      cpu[scenario].cost[t] = median(
        list.map((r) => (r.proxy_cpu_s == null || !unit.rate(r) ? null : ((r.proxy_cpu_s / r.wall_s) * unit.scale) / unit.rate(r))),
      );
    }
  }
  return { head, ref, one, cores, medians, ratios, scaling, cpu };
}

function fmt(value, digits = 0) {
  if (value == null) return '-';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function textTable(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? String(cell).padEnd(widths[i]) : String(cell).padStart(widths[i]))).join('  ')).join('\n');
}

function markdownTable(rows) {
  const line = (r) => `| ${r.map((c) => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(rows[0]), `|${rows[0].map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

const verdict = (met) => (met == null ? '' : met ? 'met' : 'NOT MET');
const goalText = (f) => (f.goal == null ? '' : `${f.higher ? '≥' : '≤'} ${f.goal}`);

/** The CPU split of one target in one scenario: "95 + 60 + 40 = 195% (+ 3 other)": proxy + load generator + backend, and other processes. */
function split(cpu, scenario, t) {
  const c = cpu[scenario];
  if (!c || c.proxy[t] == null) return '-';
  const parts = [c.proxy[t], c.loadgen[t], c.backend[t]];
  const other = c.other[t] == null ? '' : ` (+ ${fmt(c.other[t])} other)`;
  return `${fmt(parts[0])} + ${fmt(parts[1])} + ${fmt(parts[2])} = ${fmt(parts.reduce((a, b) => a + (b ?? 0), 0))}%${other}`;
}

/** The three tables of a run as rows (the first row is the header). */
export function tables(summary, targetNames) {
  const { head, ref, one, cores, medians, ratios, scaling, cpu } = summary;
  const figures = FIGURES.filter((f) => targetNames.some((t) => medians[f.key][t] != null));
  const main = [['figure (median of rounds)', ...targetNames, `${head} ÷ ${ref}`, 'goal', '', ...(cores > 1 ? [`${head} ÷ ${one}`] : []), `${head} ÷ nginx-${cores}w`, `${one} ÷ bare`]];
  for (const f of figures) {
    const r = ratios[f.key];
    main.push([
      f.label,
      ...targetNames.map((t) => fmt(medians[f.key][t], f.key === 'idle_kib' ? 1 : 0)),
      fmt(r.vs_haproxy, 2),
      goalText(f),
      verdict(r.met),
      ...(cores > 1 ? [fmt(r.vs_1w, 2)] : []),
      fmt(r.vs_nginx, 2),
      fmt(r.one_vs_bare, 2),
    ]);
  }
  const goals = [['issue 13 goal', 'ratio', 'goal', '', `CPU with ${head}: proxy + load generator + backend (+ other processes)`, `CPU with ${ref}`]];
  for (const f of figures.filter((x) => x.goal != null)) {
    const r = ratios[f.key];
    goals.push([`${f.label}: ${head} ÷ ${ref}`, fmt(r.vs_haproxy, 2), goalText(f), verdict(r.met), split(cpu, f.scenario, head), split(cpu, f.scenario, ref)]);
  }
  if (cores > 1 && medians.cps[head] != null) {
    goals.push([`new connections/s: ${head} ÷ ${one}`, fmt(scaling.ratio, 2), `≥ ${scaling.goal}`, verdict(scaling.met), split(cpu, 'connect', head), split(cpu, 'connect', one)]);
  }
  const proxies = targetNames.filter((t) => t !== 'direct');
  const cost = [['proxy CPU per unit of work (busy % of one core)', 'unit', ...proxies]];
  const gen = [['load generator + backend CPU (+ other processes), % of one core', ...targetNames]];
  for (const [scenario, c] of Object.entries(cpu)) {
    cost.push([scenario, c.unit, ...proxies.map((t) => (c.cost[t] == null ? '-' : `${fmt(c.cost[t])} (${fmt(c.proxy[t])})`))]);
    gen.push([
      scenario,
      ...targetNames.map((t) => (c.loadgen[t] == null ? '-' : `${fmt(c.loadgen[t])} + ${fmt(c.backend[t])}${c.other[t] == null ? '' : ` (+${fmt(c.other[t])})`}`)),
    ]);
  }
  return { main, goals, cost, gen };
}

export const NOTES = [
  'Ratios: > 1 means l4lb is higher. Throughput and rates: higher is better; latency and memory: lower is better. A goal is judged on the ratio as printed.',
  'CPU split: busy % of one core of the proxy (all its threads and processes), the load generator and the backend, medians of the rounds, and in brackets what other processes on the machine took meanwhile; the machine has 100% per core.',
];

/** The text printed at the end of a run. */
export function formatText(summary, targetNames) {
  const t = tables(summary, targetNames);
  return [textTable(t.main), '', textTable(t.goals), '', textTable(t.cost), '', textTable(t.gen), '', ...NOTES].join('\n');
}

/** The same tables in Markdown. */
export function formatMarkdown(summary, targetNames) {
  const t = tables(summary, targetNames);
  return { main: markdownTable(t.main), goals: markdownTable(t.goals), cost: markdownTable(t.cost), gen: markdownTable(t.gen) };
}
