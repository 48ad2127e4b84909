/**
 * The HTML status page (`GET /`): one table per pool, state in colour,
 * readable at a glance. One self-contained document: inline CSS, no script,
 * no external assets; it reloads itself every few seconds. Every value from
 * the configuration or the network is HTML-escaped.
 */
import type { LastCheckStatus, ListenerStatus, PoolStatus, RouteStatus, ServerStatus, StatusDoc } from './status.js';

/** Seconds between automatic reloads of the page. */
export const PAGE_REFRESH_S = 5;

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** `1.5 kB`, `12 MB`: bytes for a person. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** `3s ago`, `5m ago`. */
export function formatAge(atIso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(atIso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

/** One word for what a person cares about first: can it take traffic, and if not why. */
export function displayState(s: Pick<ServerStatus, 'state' | 'admin'>): 'up' | 'down' | 'drain' | 'maint' | 'removed' {
  if (s.state === 'removed') return 'removed';
  if (s.admin === 'maint') return 'maint';
  if (s.state === 'down') return 'down';
  return s.admin === 'drain' ? 'drain' : 'up';
}

/** `removed (draining, 2 open)`: a server a reload removed, whose connections are finishing. */
export function removedText(s: Pick<ServerStatus, 'active'>): string {
  return `removed (draining, ${s.active} open)`;
}

/** Servers the configuration has (not those a reload removed that are finishing their connections). */
export function configuredServers(p: Pick<PoolStatus, 'servers'>): readonly ServerStatus[] {
  return p.servers.filter((s) => s.state !== 'removed');
}

/**
 * Where a listener accepts, in one column: the bind as configured with the
 * port it got (`127.0.0.1:0` bound to 41234 reads `127.0.0.1:41234`), or
 * the bind and the port when the bind has none (`systemd:pg (port 5432)`).
 */
export function listenerAddress(l: Pick<ListenerStatus, 'bind' | 'port'>): string {
  const colon = l.bind.lastIndexOf(':');
  const ip = colon > 0 && /^\d+$/.test(l.bind.slice(colon + 1)) && !l.bind.startsWith('systemd:');
  if (ip) return `${l.bind.slice(0, colon)}:${l.port}`;
  return l.port > 0 ? `${l.bind} (port ${l.port})` : l.bind;
}

/** `sni db.example.com`, `source 10.1.0.0/16, 10.2.0.0/16`, keys joined by "and" (every one must match). */
export function routeMatch(r: RouteStatus): string {
  const parts: string[] = [];
  if (r.sni !== undefined) parts.push(`sni ${r.sni}`);
  if (r.source !== undefined) parts.push(`source ${r.source.join(', ')}`);
  if (r.country !== undefined) parts.push(`country ${r.country.join(', ')}`);
  return parts.length > 0 ? parts.join(' and ') : 'any';
}

/** `front, tls-front (route)`: the listeners that reach a pool, and how. */
export function reachedBy(p: Pick<PoolStatus, 'name' | 'listeners'>, listeners: readonly Pick<ListenerStatus, 'name' | 'pool'>[]): string {
  return (p.listeners ?? [])
    .map((name) => (listeners.find((l) => l.name === name)?.pool === p.name ? name : `${name} (route)`))
    .join(', ');
}

function lastCheck(c: LastCheckStatus | null, now: number): string {
  if (c === null) return '<span class="muted">–</span>';
  const what = c.ok
    ? `<span class="ok">ok</span> ${escapeHtml(c.latency_ms)} ms`
    : `<span class="fail">${escapeHtml(c.reason || 'failed')}</span>`;
  const passive = c.source === 'passive' ? ' <span class="muted">(client connect)</span>' : '';
  return `${what}${passive} <span class="muted" title="${escapeHtml(c.at)}">${escapeHtml(formatAge(c.at, now))}</span>`;
}

function serverRow(s: ServerStatus, now: number): string {
  const state = displayState(s);
  const weight = s.effective_weight === s.weight ? `${s.weight}` : `${s.effective_weight} / ${s.weight}`;
  // The badge says the most important thing; whichever of health and admin state it hides is noted beside it.
  const note =
    state === 'removed'
      ? ` <span class="muted">(draining, ${s.active} open)</span>`
      : state === 'maint' && s.state === 'down'
      ? ' <span class="muted">(health down)</span>'
      : state === 'down' && s.admin !== 'ready'
        ? ` <span class="muted">(${s.admin})</span>`
        : '';
  return `<tr class="row-${state}">
<td><span class="badge ${state}">${state}</span>${note}</td>
<td class="name">${escapeHtml(s.name)}${s.backup ? ' <span class="tag">backup</span>' : ''}</td>
<td class="mono">${escapeHtml(s.address)}</td>
<td class="num">${escapeHtml(weight)}</td>
<td class="num">${s.active}</td>
<td class="num">${s.total}</td>
<td class="num${s.connect_failures > 0 ? ' warn' : ''}">${s.connect_failures}</td>
<td class="num">${escapeHtml(formatBytes(s.bytes_in))} / ${escapeHtml(formatBytes(s.bytes_out))}</td>
<td class="num">${s.response_ms === null || s.response_ms === undefined ? '<span class="muted">–</span>' : `${s.response_ms} ms`}</td>
<td>${lastCheck(s.last_check, now)}</td>
</tr>`;
}

function poolSection(p: PoolStatus, listeners: readonly ListenerStatus[], now: number): string {
  const configured = configuredServers(p);
  const usable = configured.filter((s) => displayState(s) === 'up').length;
  const active = p.servers.reduce((n, s) => n + s.active, 0);
  const health = p.removed ? 'removed' : usable === 0 ? 'down' : usable < configured.length ? 'drain' : 'up';
  const badge = p.removed ? 'removed' : `${usable}/${configured.length}`;
  const from = p.removed ? 'removed by a reload, draining' : (p.listeners ?? []).length > 0 ? `from ${reachedBy(p, listeners)}` : 'no listener';
  return `<section>
<h2><span class="badge ${health}">${badge}</span> pool ${escapeHtml(p.name)} <span class="muted">${escapeHtml(p.balance === 'least_time' ? `least_time (${p.measure})` : p.balance)} · ${active} active · ${escapeHtml(from)}</span></h2>
<table>
<thead><tr><th>state</th><th>server</th><th>address</th><th class="num">weight</th><th class="num">active</th><th class="num">total</th><th class="num">fails</th><th class="num">bytes in / out</th><th class="num" title="average ${escapeHtml(p.measure ?? 'connect')} time">response</th><th>last check</th></tr></thead>
<tbody>
${p.servers.map((s) => serverRow(s, now)).join('\n')}
</tbody>
</table>
</section>`;
}

const STYLE = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #6b7280; --line: #e3e6eb; --bg: #fff; --head: #f5f6f8;
  --up: #1a7f37; --down: #cf222e; --drain: #b35900; --maint: #57606a; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e6e6; --muted: #9aa3ad; --line: #333a44; --bg: #16191e; --head: #1f232a;
  --up: #3fb950; --down: #f85149; --drain: #d29922; --maint: #8b949e; } }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); margin: 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .25rem; } h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; max-width: 80rem; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: var(--head); font-weight: 600; font-size: .85rem; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em; }
.muted { color: var(--muted); font-weight: normal; }
.badge { display: inline-block; min-width: 3.2em; text-align: center; padding: 0 .45em; border-radius: .6em; color: #fff; font-weight: 600; font-size: .85em; }
.badge.up { background: var(--up); } .badge.down { background: var(--down); } .badge.drain { background: var(--drain); } .badge.maint, .badge.removed { background: var(--maint); }
tr.row-down td { background: color-mix(in srgb, var(--down) 8%, transparent); }
tr.row-drain td, tr.row-maint td, tr.row-removed td { color: var(--muted); }
.ok { color: var(--up); } .fail, .warn { color: var(--down); }
.tag { font-size: .75em; border: 1px solid var(--line); border-radius: .4em; padding: 0 .3em; color: var(--muted); }
.phase { font-weight: 600; }
`;

export function renderStatusPage(doc: StatusDoc): string {
  const now = Date.parse(doc.time);
  const servers = doc.pools.filter((p) => !p.removed).flatMap(configuredServers);
  const up = servers.filter((s) => displayState(s) === 'up').length;
  const connections = doc.listeners.reduce((n, l) => n + l.connections, 0);
  const listeners = doc.listeners
    .map((l) => {
      const routes = (l.routes ?? []).map((r) => `${escapeHtml(routeMatch(r))} → ${escapeHtml(r.pool)}`).join('<br>');
      return (
        `<tr><td class="name">${escapeHtml(l.name)}</td><td class="mono">${escapeHtml(listenerAddress(l))}</td>` +
        `<td>${escapeHtml(l.pool)}</td><td class="routes">${routes || '<span class="muted">–</span>'}</td><td class="num">${l.connections}</td><td class="num">${l.accepted}</td></tr>`
      );
    })
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="${PAGE_REFRESH_S}">
<title>l4lb · ${up}/${servers.length} servers up</title>
<style>${STYLE}</style>
</head>
<body>
<h1>l4lb status</h1>
<p class="muted"><span class="phase">${escapeHtml(doc.phase)}</span> · ${up}/${servers.length} servers taking traffic · ${connections} open connections · ${escapeHtml(doc.time)} · refreshes every ${PAGE_REFRESH_S}s</p>
<section>
<h2>listeners</h2>
<table>
<thead><tr><th>listener</th><th>address</th><th>pool</th><th>routes</th><th class="num">open</th><th class="num">accepted</th></tr></thead>
<tbody>
${listeners}
</tbody>
</table>
</section>
${doc.pools.map((p) => poolSection(p, doc.listeners, now)).join('\n')}
</body>
</html>
`;
}
