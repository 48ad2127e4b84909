// Turning per-round results into medians, ratios and the printed table.

/** The figures of the table: which scenario and result field each comes from, and which way is better. */
export const FIGURES = [
  { key: 'upload_mbps', scenario: 'upload', field: 'mbps', label: 'upload, 1 stream (MB/s)', higher: true },
  { key: 'download_mbps', scenario: 'download', field: 'mbps', label: 'download, 1 stream (MB/s)', higher: true },
  { key: 'connect_cps', scenario: 'connect', field: 'cps', label: 'new conns/s (16 B req/resp)', higher: true },
  { key: 'rr_rps', scenario: 'latency', field: 'rps', label: 'req/s, persistent (64 B)', higher: true },
  { key: 'rr_p50_us', scenario: 'latency', field: 'p50_us', label: 'latency p50 (µs)', higher: false },
  { key: 'rr_p99_us', scenario: 'latency', field: 'p99_us', label: 'latency p99 (µs)', higher: false },
];

/** How to express the proxy's CPU cost per unit of work in each scenario. */
const COST_UNITS = {
  upload: { label: 'CPU ms per GB', scale: 1e3, count: (r) => r.bytes / 1e9 },
  download: { label: 'CPU ms per GB', scale: 1e3, count: (r) => r.bytes / 1e9 },
  connect: { label: 'CPU µs per connection', scale: 1e6, count: (r) => r.connections },
  latency: { label: 'CPU µs per request', scale: 1e6, count: (r) => r.requests },
};

/** l4lb may be this much worse than the bare proxy on any figure (issue 2). */
export const TOLERANCE = 0.1;

function withinTolerance(ratio, higherIsBetter) {
  return higherIsBetter ? ratio >= 1 - TOLERANCE : ratio <= 1 + TOLERANCE;
}

export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/**
 * `rounds[scenario][target]` is a list of load.js results (each with
 * `proxy_cpu_pct`). Returns the medians per figure and target, the ratios,
 * and the median proxy CPU per scenario and target.
 */
export function summarise(rounds, targetNames) {
  const medians = {};
  for (const f of FIGURES) {
    medians[f.key] = {};
    for (const t of targetNames) {
      medians[f.key][t] = median((rounds[f.scenario]?.[t] ?? []).map((r) => r[f.field]));
    }
  }
  const ratio = (a, b) => (a != null && b ? a / b : null);
  const ratios = {};
  for (const f of FIGURES) {
    const m = medians[f.key];
    const vsBare = ratio(m.l4lb, m.bare);
    ratios[f.key] = {
      l4lb_direct: ratio(m.l4lb, m.direct),
      l4lb_bare: vsBare,
      l4lb_log_bare: ratio(m['l4lb+log'], m.bare),
      // Within tolerance of the floor, in the figure's own direction; judged on
      // the ratio as printed (two decimals), so the table never contradicts itself.
      l4lb_within_10pct_of_bare: vsBare == null ? null : withinTolerance(Math.round(vsBare * 100) / 100, f.higher),
    };
  }
  // CPU the proxy spent per unit of work: less sensitive than rates to other
  // load on a shared machine, and it shows where the extra time goes.
  const cpu = {};
  const cost = {};
  for (const scenario of Object.keys(rounds)) {
    const unit = COST_UNITS[scenario];
    cpu[scenario] = {};
    cost[scenario] = { unit: unit.label };
    for (const t of targetNames) {
      const list = rounds[scenario][t];
      cpu[scenario][t] = median(list.map((r) => r.proxy_cpu_pct));
      cost[scenario][t] = median(list.map((r) => (r.proxy_cpu_s == null ? null : (r.proxy_cpu_s * unit.scale) / unit.count(r))));
    }
    cost[scenario].l4lb_bare = ratio(cost[scenario].l4lb, cost[scenario].bare);
  }
  return { medians, ratios, cpu, cost };
}

function fmt(value, digits = 0) {
  if (value == null) return '-';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r) => r.map((cell, i) => (i === 0 ? String(cell).padEnd(widths[i]) : String(cell).padStart(widths[i]))).join('  '))
    .join('\n');
}

/** The text printed at the end of a run. */
export function formatReport({ medians, ratios, cpu, cost }, targetNames) {
  const hasLog = targetNames.includes('l4lb+log');
  const head = ['figure (median of rounds)', ...targetNames, 'l4lb/direct', 'l4lb/bare', ...(hasLog ? ['l4lb+log/bare'] : []), ''];
  const rows = [head];
  for (const f of FIGURES) {
    const r = ratios[f.key];
    const verdict = r.l4lb_within_10pct_of_bare == null ? '' : r.l4lb_within_10pct_of_bare ? 'ok' : 'OFF >10%';
    rows.push([
      f.label,
      ...targetNames.map((t) => fmt(medians[f.key][t])),
      fmt(r.l4lb_direct, 2),
      fmt(r.l4lb_bare, 2),
      ...(hasLog ? [fmt(r.l4lb_log_bare, 2)] : []),
      verdict,
    ]);
  }
  const proxies = targetNames.filter((t) => t !== 'direct');
  const cpuRows = [['proxy CPU', 'unit', ...proxies.map((t) => `${t} (busy %)`), 'l4lb/bare']];
  for (const scenario of Object.keys(cpu)) {
    cpuRows.push([
      scenario,
      cost[scenario].unit,
      ...proxies.map((t) => `${fmt(cost[scenario][t])} (${fmt(cpu[scenario][t])})`),
      fmt(cost[scenario].l4lb_bare, 2),
    ]);
  }
  return [
    table(rows),
    '',
    'Ratios: >1 means l4lb is higher. Throughput and rates: higher is better; latency: lower is better.',
    `"ok": l4lb within ${TOLERANCE * 100}% of the bare proxy in the figure's better direction. Headline: l4lb (access log off).`,
    '',
    table(cpuRows),
    'Proxy CPU: CPU time of the proxy process per unit of work (lower is better), and in brackets its busy share of one core.',
  ].join('\n');
}
