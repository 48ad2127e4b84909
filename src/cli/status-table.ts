/**
 * `l4lb status` as text for people: the listeners (where each accepts, its
 * default pool, open and accepted connections), their routes, then each
 * pool with the listeners that reach it and its servers. Servers a reload
 * removed that still have open connections read `removed (draining, N
 * open)`. Fields an older instance does not send are read as absent.
 */
import { formatTable } from '../admin/client.js';
import { configuredServers, displayState, formatAge, listenerAddress, reachedBy, removedText, routeMatch } from '../admin/page.js';
import type { LastCheckStatus, PoolStatus, StatusDoc } from '../admin/status.js';

function lastCheck(c: LastCheckStatus | null, now: number): string {
  if (c === null) return '-';
  const age = formatAge(c.at, now);
  if (c.ok) return `ok ${c.latency_ms}ms, ${age}`;
  return `fail${c.source === 'passive' ? ' (client connect)' : ''}: ${c.reason || 'failed'}, ${age}`;
}

/** `POOL pg (least_conn, from front): 2/3 servers taking new connections`. */
function poolHeading(p: PoolStatus, doc: StatusDoc): string {
  if (p.removed) {
    const open = p.servers.reduce((n, s) => n + s.active, 0);
    return `POOL ${p.name} (${p.balance}, removed by a reload): draining, ${open} open connection${open === 1 ? '' : 's'}`;
  }
  const configured = configuredServers(p);
  const taking = configured.filter((s) => displayState(s) === 'up').length;
  // An older instance sends no `listeners`: say nothing rather than "no listener".
  const from = p.listeners === undefined ? '' : p.listeners.length > 0 ? `, from ${reachedBy(p, doc.listeners)}` : ', from no listener';
  return `POOL ${p.name} (${p.balance}${from}): ${taking}/${configured.length} servers taking new connections`;
}

/** `l4lb status` output: listeners, their routes, then each pool with its servers. */
export function formatStatus(doc: StatusDoc, now = Date.now()): string {
  const out: string[] = [];
  if (doc.phase !== 'running') out.push(`l4lb is ${doc.phase}`, '');
  out.push(
    formatTable(
      ['LISTENER', 'ADDRESS', 'POOL', 'OPEN', 'ACCEPTED'],
      doc.listeners.map((l) => [l.name, listenerAddress(l), l.pool, String(l.connections), String(l.accepted)]),
      new Set([3, 4]),
    ),
  );
  const routes = doc.listeners.flatMap((l) => (l.routes ?? []).map((r) => [l.name, routeMatch(r), r.pool]));
  if (routes.length > 0) {
    out.push('', 'ROUTES (first match wins; otherwise the listener\'s pool)', formatTable(['LISTENER', 'MATCH', 'POOL'], routes, new Set(), '  '));
  }
  for (const p of doc.pools) {
    out.push('', poolHeading(p, doc));
    out.push(
      formatTable(
        ['NAME', 'ADDRESS', 'STATE', 'ADMIN', 'WEIGHT', 'ACTIVE', 'TOTAL', 'FAILS', 'LAST CHECK'],
        p.servers.map((s) => [
          s.backup ? `${s.name} (backup)` : s.name,
          s.address,
          s.state === 'removed' ? removedText(s) : s.state,
          s.admin,
          s.effective_weight === s.weight ? String(s.weight) : `${s.effective_weight}/${s.weight}`,
          String(s.active),
          String(s.total),
          String(s.connect_failures),
          lastCheck(s.last_check, now),
        ]),
        new Set([4, 5, 6, 7]),
        '  ',
      ),
    );
  }
  return `${out.join('\n')}\n`;
}
