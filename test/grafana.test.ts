/**
 * conf/grafana/l4lb.json, the dashboard operators import as is: valid
 * dashboard JSON (a Prometheus datasource input, panels with unique ids,
 * a place on the grid and queries), and every metric its queries name is
 * one a running l4lb really exports, so a renamed metric cannot silently
 * leave a panel empty.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from './helpers/cli.js';
import { adminPort, lbFor, namedBackendsFor } from './helpers/lb.js';

const DASHBOARD = join(ROOT, 'conf', 'grafana', 'l4lb.json');

interface Target {
  readonly refId?: unknown;
  readonly expr?: unknown;
  readonly datasource?: { readonly uid?: unknown };
}
interface Panel {
  readonly id?: unknown;
  readonly type?: unknown;
  readonly title?: unknown;
  readonly gridPos?: { readonly h?: unknown; readonly w?: unknown; readonly x?: unknown; readonly y?: unknown };
  readonly datasource?: { readonly type?: unknown; readonly uid?: unknown };
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
}
interface Variable {
  readonly name: string;
  readonly query?: { readonly query?: string } | string;
}
interface Dashboard {
  readonly __inputs?: ReadonlyArray<{ name: string; type: string; pluginId: string }>;
  readonly schemaVersion?: unknown;
  readonly title?: unknown;
  readonly uid?: unknown;
  readonly panels?: readonly Panel[];
  readonly templating?: { readonly list?: readonly Variable[] };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
/** Every panel, rows' nested panels included. */
const panels: Panel[] = (dashboard.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = panels.filter((p) => p.type !== 'row');
const variables = dashboard.templating?.list ?? [];
const variableQuery = (v: Variable): string => (typeof v.query === 'string' ? v.query : (v.query?.query ?? ''));
/** Every PromQL text the dashboard runs: panel queries and variable queries. */
const queries: string[] = [...queryPanels.flatMap((p) => (p.targets ?? []).map((x) => String(x.expr))), ...variables.map(variableQuery)];

/** The l4lb metric names a query names. */
function metricNames(query: string): string[] {
  return [...query.matchAll(/\b(l4lb_[a-z0-9_]+)\b/g)].map((m) => m[1]!);
}

t.test('conf/grafana/l4lb.json is an importable dashboard: a Prometheus datasource input, a schema version, a title and uid', async (t) => {
  const input = dashboard.__inputs?.find((i) => i.type === 'datasource');
  t.match(input, { name: 'DS_PROMETHEUS', pluginId: 'prometheus' }, 'import asks for a Prometheus datasource');
  t.type(dashboard.schemaVersion, 'number');
  t.ok((dashboard.schemaVersion as number) >= 36 && (dashboard.schemaVersion as number) <= 41, `schemaVersion ${String(dashboard.schemaVersion)} (Grafana 9 to 11)`);
  t.equal(typeof dashboard.title, 'string');
  t.match(dashboard.uid, /^[a-zA-Z0-9_-]{1,40}$/, 'a stable uid (Grafana allows 40 characters)');
});

t.test('every panel has a unique id and a place on the 24-column grid, and none overlaps another', async (t) => {
  t.ok(queryPanels.length >= 10, `${queryPanels.length} panels`);
  const ids = panels.map((p) => p.id);
  t.ok(ids.every((id) => Number.isInteger(id)), 'integer ids');
  t.equal(new Set(ids).size, ids.length, 'unique ids');
  const boxes: Array<{ x: number; y: number; w: number; h: number; title: string }> = [];
  for (const p of panels) {
    const g = p.gridPos ?? {};
    const ok = [g.h, g.w, g.x, g.y].every((v) => Number.isInteger(v) && (v as number) >= 0);
    t.ok(ok, `panel ${String(p.title)} has gridPos h, w, x, y`);
    if (!ok) continue;
    const box = { x: g.x as number, y: g.y as number, w: g.w as number, h: g.h as number, title: String(p.title) };
    t.ok(box.w >= 1 && box.x + box.w <= 24, `panel ${box.title} fits in 24 columns`);
    const clash = boxes.find((b) => box.x < b.x + b.w && b.x < box.x + box.w && box.y < b.y + b.h && b.y < box.y + box.h);
    t.notOk(clash, `panel ${box.title} overlaps no other${clash ? ` (it overlaps ${clash.title})` : ''}`);
    boxes.push(box);
  }
});

t.test('every query panel reads the Prometheus input and has targets with a refId and a PromQL expr', async (t) => {
  for (const p of queryPanels) {
    t.equal(p.datasource?.uid, '${DS_PROMETHEUS}', `panel ${String(p.title)} uses the imported datasource`);
    const targets = p.targets ?? [];
    t.ok(targets.length > 0, `panel ${String(p.title)} has targets`);
    t.equal(new Set(targets.map((x) => x.refId)).size, targets.length, `panel ${String(p.title)}: unique refIds`);
    for (const x of targets) {
      t.ok(typeof x.expr === 'string' && metricNames(x.expr).length > 0, `panel ${String(p.title)} ${String(x.refId)}: an expr naming an l4lb metric`);
    }
  }
});

t.test('every $variable a query uses is defined by the dashboard or by Grafana', async (t) => {
  const defined = new Set([...variables.map((v) => v.name), '__rate_interval', '__interval', '__range']);
  for (const q of queries) {
    for (const m of q.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)) t.ok(defined.has(m[1]!), `$${m[1]} in ${q}`);
  }
});

t.test('the dashboard covers what an operator watches: traffic, rejections, pools, servers, health, reloads, DNS, workers, logs', async (t) => {
  const used = new Set(queries.flatMap(metricNames));
  for (const name of [
    'l4lb_connections_total',
    'l4lb_active_connections',
    'l4lb_rejected_connections_total',
    'l4lb_bytes_total',
    'l4lb_server_up',
    'l4lb_connect_failures_total',
    'l4lb_health_check_duration_seconds',
    'l4lb_reloads_total',
    'l4lb_dns_failures_total',
    'l4lb_worker_restarts_total',
    'l4lb_log_lines_dropped_total',
  ]) {
    t.ok(used.has(name), name);
  }
});

t.test('every metric name the dashboard queries is one a running l4lb exports on /metrics', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await lbFor(t, {
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ name: 'a', address: a!.address }] }],
  });
  const text = await (await fetch(`http://127.0.0.1:${adminPort(lb)}/metrics`)).text();
  const exported = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
  t.ok(exported.has('l4lb_connections_total'), 'the scrape lists l4lb metrics');
  // A metric the contract names but this build does not export yet is accepted with a comment, never silently.
  const design = join(ROOT, '..', 'shared', 'DESIGN.md');
  const contract = [readFileSync(join(ROOT, 'README.md'), 'utf8'), existsSync(design) ? readFileSync(design, 'utf8') : ''].join('\n');
  for (const name of [...new Set(queries.flatMap(metricNames))].sort()) {
    if (exported.has(name)) {
      t.pass(`${name} is exported`);
    } else {
      t.ok(contract.includes(name), `${name} is not exported yet, but the contract names it`);
      t.comment(`${name}: named by the contract, not exported by this build yet`);
    }
  }
});
