/**
 * The reload preview as text for people (`l4lb check --diff`): sections with
 * aligned columns, `no changes` when a reload would change nothing. What
 * changes is worked out by ../config/diff.ts; this file only lays it out.
 */
import { formatTable } from '../admin/client.js';
import type { ClientMoves, ConfigDiff, FieldChange, ServerSummary } from '../config/diff.js';
import type { RuntimeChange } from '../runtime/runtime-changes.js';

/** Admin settings and the process user are read once, at start. */
const RESTART_NOTE = 'takes effect at the next restart, not on reload';

/** `1234567` → `1,234,567`, the same in every locale. */
export function formatInt(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** A share as a percentage: `10.02%`, `0%` only when exactly nothing, `<0.01%` for a sliver. */
export function formatShare(share: number): string {
  if (share === 0) return '0%';
  if (share < 0.00005) return '<0.01%';
  return `${(share * 100).toFixed(2)}%`;
}

/** Largest flows shown per pool; the rest are summed up. */
const MAX_FLOWS = 8;

function tally(parts: Record<string, number>): string {
  return Object.entries(parts)
    .filter(([, n]) => n > 0)
    .map(([what, n]) => `${n} ${what}`)
    .join(', ');
}

/** `field  from → to  (note)` lines, field names aligned. */
function fieldLines(fields: readonly FieldChange[], indent: string): string[] {
  const width = Math.max(...fields.map((f) => f.field.length));
  return fields.map((f) => `${indent}${f.field.padEnd(width)}  ${f.from} → ${f.to}${f.note ? `  (${f.note})` : ''}`);
}

/** `+ name  rest` lines, names aligned. */
function itemLines(items: readonly { mark: string; name: string; rest: string }[], indent: string): string[] {
  const width = Math.max(...items.map((i) => i.name.length));
  return items.map((i) => `${indent}${i.mark} ${i.name.padEnd(width)}  ${i.rest}`.trimEnd());
}

function serverText(s: ServerSummary): string {
  return `${s.address}  weight ${s.weight}${s.backup ? ', backup' : ''}`;
}

function clientMovesLines(m: ClientMoves): string[] {
  if (m.kind === 'remapped') {
    const why =
      m.to === 'source_hash'
        ? `balance ${m.from} → source_hash: every client is mapped to a server by hash from now on; there was no affinity before`
        : `balance source_hash → ${m.to}: client affinity ends; clients are spread by ${m.to} from now on`;
    return [`  pool ${m.pool}: all clients remapped (100%)`, `    ${why}`];
  }
  if (m.kind === 'unchanged') return [`  pool ${m.pool}: no client moves (0%): same servers with the same weights`];
  const { ipv4, ipv6, expected, servers, flows } = m.moves;
  const lines = [
    `  pool ${m.pool}: ${formatShare(m.share)} of client addresses move to another server`,
    `    IPv4: ${formatInt(ipv4.moved)} of ${formatInt(ipv4.sampled)} sampled addresses (${formatShare(ipv4.moved / Math.max(1, ipv4.sampled))})`,
    `    IPv6: ${formatInt(ipv6.moved)} of ${formatInt(ipv6.sampled)} sampled addresses (${formatShare(ipv6.moved / Math.max(1, ipv6.sampled))})`,
    `    ideal hash with these weights: ${formatShare(expected)}`,
  ];
  const signed = (sign: string, share: number): string => (share === 0 ? '0%' : `${sign}${formatShare(share)}`);
  lines.push(
    formatTable(
      ['SERVER', 'BEFORE', 'AFTER', 'GAINS', 'LOSES'],
      servers.map((s) => [s.name, formatShare(s.before), formatShare(s.after), signed('+', s.gained), signed('-', s.lost)]),
      new Set([1, 2, 3, 4]),
      '    ',
    ),
  );
  if (flows.length > 0) {
    const shown = flows.slice(0, MAX_FLOWS).map((f) => `${f.from} → ${f.to} ${formatShare(f.share)}`);
    const rest = flows.slice(MAX_FLOWS).reduce((n, f) => n + f.share, 0);
    lines.push(`    flows: ${shown.join(', ')}${flows.length > MAX_FLOWS ? `, and ${flows.length - MAX_FLOWS} smaller (${formatShare(rest)})` : ''}`);
  }
  return lines;
}

/**
 * The diff as text for people: sections with aligned columns, `no changes`
 * when a reload would change nothing.
 */
export function formatDiff(diff: ConfigDiff): string {
  const out: string[] = [];
  const certNote =
    diff.certificateFiles > 0
      ? `A reload re-reads the ${diff.certificateFiles} certificate, key and CA file${diff.certificateFiles === 1 ? '' : 's'} even when their paths are unchanged.`
      : null;
  if (diff.identical) {
    out.push('no changes');
    if (certNote !== null) out.push(certNote);
    return `${out.join('\n')}\n`;
  }
  const { listeners, pools } = diff;
  const section = (title: string, lines: string[]): void => {
    if (out.length > 0) out.push('');
    out.push(title, ...lines);
  };

  if (listeners.added.length + listeners.removed.length + listeners.changed.length > 0) {
    const lines = itemLines(
      [
        ...listeners.added.map((l) => ({ mark: '+', name: l.name, rest: `${l.bind} → pool ${l.pool}, ${l.kind}; ${l.note}` })),
        ...listeners.removed.map((l) => ({ mark: '-', name: l.name, rest: `${l.bind} → pool ${l.pool}, ${l.kind}; ${l.note}` })),
        ...listeners.changed.map((l) => ({ mark: '~', name: l.name, rest: '' })),
      ],
      '  ',
    );
    // Changed listeners get their fields right under their own line.
    const changedStart = listeners.added.length + listeners.removed.length;
    const body: string[] = lines.slice(0, changedStart);
    listeners.changed.forEach((l, i) => body.push(lines[changedStart + i]!, ...fieldLines(l.fields, '      ')));
    section(`Listeners: ${tally({ added: listeners.added.length, removed: listeners.removed.length, changed: listeners.changed.length })}`, body);
  }

  if (pools.added.length + pools.removed.length + pools.changed.length > 0) {
    const body: string[] = itemLines(
      [
        ...pools.added.map((p) => ({ mark: '+', name: p.name, rest: `${p.balance}, ${p.servers.length} server${p.servers.length === 1 ? '' : 's'}` })),
        ...pools.removed.map((p) => ({
          mark: '-',
          name: p.name,
          rest: `${p.balance}, ${p.servers.length} server${p.servers.length === 1 ? '' : 's'}; takes no new connections, open ones continue`,
        })),
      ],
      '  ',
    );
    for (const p of pools.changed) {
      body.push(`  ~ ${p.name}`);
      if (p.fields.length > 0) body.push(...fieldLines(p.fields, '      '));
      const s = p.servers;
      const items = [
        ...s.added.map((x) => ({ mark: '+', name: x.name, rest: serverText(x) })),
        ...s.removed.map((x) => ({ mark: '-', name: x.name, rest: `${serverText(x)}; takes no new connections, open ones continue` })),
        ...s.changed.map((x) => ({ mark: '~', name: x.name, rest: '' })),
      ];
      if (items.length === 0) continue;
      body.push(`      servers: ${tally({ added: s.added.length, removed: s.removed.length, changed: s.changed.length })}`);
      const lines = itemLines(items, '        ');
      const changedStart = s.added.length + s.removed.length;
      body.push(...lines.slice(0, changedStart));
      s.changed.forEach((x, i) => body.push(lines[changedStart + i]!, ...fieldLines(x.fields, '            ')));
    }
    section(`Pools: ${tally({ added: pools.added.length, removed: pools.removed.length, changed: pools.changed.length })}`, body);
  }

  if (diff.clientMoves.length > 0) {
    const body = diff.clientMoves.flatMap(clientMovesLines);
    if (diff.clientMoves.some((m) => m.kind === 'sampled')) {
      body.push(
        `  Sample: ${formatInt(diff.sample.ipv4)} IPv4 addresses spread evenly over 0.0.0.0/0 (the headline figure) and ${formatInt(diff.sample.ipv6)}`,
        `  fixed-seed IPv6 addresses in 2000::/3; servers and flows are from the IPv4 sample.`,
      );
    }
    body.push(
      '  Assumed: every server up and ready, primaries only (backups only in a pool without primaries), configured weights.',
      '  Open connections stay where they are; this is where each client\'s new connections go after the reload.',
    );
    section('Client moves (source_hash)', body);
  }

  if (diff.admin.length > 0) section(`Admin (${RESTART_NOTE})`, fieldLines(diff.admin, '  '));
  if (diff.log.length > 0) section('Log', fieldLines(diff.log, '  '));
  if (diff.process.length > 0) section(`Process (${RESTART_NOTE})`, fieldLines(diff.process, '  '));

  const notes = ['Changed settings apply to new connections; open connections keep those they started with.'];
  if (certNote !== null) notes.push(certNote);
  section('Notes', notes.map((n) => `  ${n}`));
  return `${out.join('\n')}\n`;
}

/**
 * The runtime changes the running instance lists (admin API: servers added
 * and removed, networks denied): a reload from the file undoes every one.
 * Empty when there are none.
 */
export function formatRuntimeChanges(changes: readonly RuntimeChange[]): string {
  if (changes.length === 0) return '';
  const lines = changes.map((c) => {
    if (c.kind === 'server_added') return `  pool ${c.pool}: server ${c.server} (${c.address}) added at ${c.at}; a reload removes it`;
    if (c.kind === 'server_removed') return `  pool ${c.pool}: server ${c.server} (${c.address}) removed at ${c.at}; a reload adds it back (if the file has it)`;
    const until = c.expires === null ? 'until the next reload' : `until ${c.expires}`;
    return `  listener ${c.listener}: ${c.cidr} denied at ${c.at}, ${until}; a reload lifts it`;
  });
  return `\nRuntime changes a reload would undo (${changes.length}; made through the admin API, shown above as changes too):\n${lines.join('\n')}\n`;
}
