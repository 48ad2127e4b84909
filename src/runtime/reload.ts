/**
 * SIGHUP: read and validate the whole file first; apply only a good one.
 * A bad file (or a certificate that does not load, or a new port that cannot
 * be bound) is logged problem by problem and the running configuration stays.
 * After a privilege drop, a secret file the user cannot read is served from
 * the copy read at start (config/secret-file.ts); each reload says so, per file.
 *
 * A good reload logs one line that says what changed, from the comparison
 * `l4lb check --diff` makes (config/diff.ts): listeners and pools added and
 * removed; per listener, the settings that changed; per pool, the servers
 * added, removed (with the connections they still have, which finish) and
 * changed, and the pool settings that changed; and the rest (log level,
 * settings that wait for a restart). Probe payloads are never written out.
 */
import type { ConfigDiff, FieldChange, ServerSummary } from '../config/diff.js';
import { loadConfig } from '../config/load.js';
import { takeKeptReads } from '../config/secret-file.js';
import { ConfigError, L4lbError, describe } from '../errors.js';
import type { Logger } from '../log.js';
import type { App } from './app.js';
import { readerGroup, rereadFix } from './privileges.js';

export async function reloadFromFile(app: App, file: string, logger: Logger): Promise<boolean> {
  const started = Date.now();
  takeKeptReads(); // what earlier reads used is not this reload's news
  try {
    const next = await loadConfig(file);
    for (const w of next.warnings) logger.warn({ warning: w }, 'configuration warning');
    const result = await app.reload(next);
    app.reloads.succeeded++;
    app.reloads.lastSucceeded = true;
    app.reloads.lastAt = Date.now();
    logger.info(
      {
        config: file,
        duration_ms: Date.now() - started,
        listeners_added: result.listenersAdded,
        listeners_removed: result.listenersRemoved,
        pools_added: result.poolsAdded,
        pools_removed: result.poolsRemoved,
        ...reloadChanges(result.changes, (pool, server) => openConnections(app, pool, server)),
      },
      'configuration reloaded',
    );
    return true;
  } catch (err) {
    app.reloads.failed++;
    app.reloads.lastSucceeded = false;
    app.reloads.lastAt = Date.now();
    if (err instanceof ConfigError) {
      for (const p of err.problems) logger.error({ config: file, path: p.path, problem: p.message }, 'configuration problem');
    }
    logger.error(
      { config: file, code: err instanceof L4lbError ? err.code : undefined, err: err instanceof ConfigError ? `${err.problems.length} problem(s)` : describe(err) },
      'reload failed; the running configuration is unchanged',
    );
    return false;
  } finally {
    logKeptCopies(app, logger);
  }
}

/**
 * One line per secret file this reload could not read after the privilege
 * drop (it used the copy read at start): its path, and how to let reloads
 * see new versions.
 */
function logKeptCopies(app: App, logger: Logger): void {
  const { user, group } = app.model;
  for (const path of takeKeptReads()) {
    logger.warn(
      {
        file: path,
        user: user ?? undefined,
        fix: rereadFix(path, user !== null ? readerGroup(user, group) : 'l4lb'),
      },
      'secret file not readable after the privilege drop: kept the copy read at start (a new version takes effect only after a restart); to let reloads see new versions, let the group l4lb runs as read it (fix)',
    );
  }
}

// ---------------------------------------------------------------------------
// What the reload line says

/** Items of one kind named in the `changes` text; the rest are counted (the structured fields list them all). */
const TEXT_ITEMS = 10;

/** `{field: "from → to"}`: the settings that changed, keyed by their configuration key. */
function fieldMap(fields: readonly FieldChange[]): Record<string, string> {
  return Object.fromEntries(fields.map((f) => [f.field, `${f.from} → ${f.to}`]));
}

function fieldText(fields: readonly FieldChange[]): string[] {
  return fields.map((f) => `${f.field} ${f.from} → ${f.to}`);
}

/** `a, b, c and 4 more`. */
function some(items: readonly string[]): string {
  return items.length <= TEXT_ITEMS ? items.join(', ') : `${items.slice(0, TEXT_ITEMS).join(', ')} and ${items.length - TEXT_ITEMS} more`;
}

/** `pg2` or `pg2 (10.0.0.2:5432)` when the name is not the address. */
function serverLabel(s: Pick<ServerSummary, 'name' | 'address'>): string {
  return s.name === s.address ? s.name : `${s.name} (${s.address})`;
}

/** `2 open, draining`, or nothing for a server without connections. */
function drainingText(open: number): string {
  return open > 0 ? ` (${open} open, draining)` : '';
}

/**
 * The reload line's fields for what changed beyond listeners and pools
 * added and removed: `listeners_changed`, `pools_changed` (servers added,
 * removed with their open connections, changed), `settings_changed`, and
 * `changes`, the same in one sentence for people (`none` when only
 * certificates were re-read).
 *
 * @param open the open connections (every thread's) of a server the reload removed or replaced
 */
export function reloadChanges(changes: ConfigDiff, open: (pool: string, server: string) => number): Record<string, unknown> {
  const text: string[] = [];
  const { listeners, pools } = changes;
  for (const l of listeners.added) text.push(`listener ${l.name} added (${l.bind} → pool ${l.pool})`);
  for (const l of listeners.removed) text.push(`listener ${l.name} removed`);
  for (const l of listeners.changed) text.push(`listener ${l.name}: ${fieldText(l.fields).join(', ')}`);
  for (const p of pools.added) text.push(`pool ${p.name} added (${p.servers.length} server${p.servers.length === 1 ? '' : 's'})`);
  for (const p of pools.removed) {
    const draining = p.servers.reduce((n, s) => n + open(p.name, s.name), 0);
    text.push(`pool ${p.name} removed${draining > 0 ? ` (${draining} open, draining)` : ''}`);
  }
  const poolsChanged = pools.changed.map((p) => {
    const { added, removed, changed } = p.servers;
    const parts: string[] = [];
    if (added.length > 0) parts.push(`server${added.length === 1 ? '' : 's'} added ${some(added.map(serverLabel))}`);
    const removedOpen = removed.map((s) => open(p.name, s.name));
    if (removed.length > 0) parts.push(`server${removed.length === 1 ? '' : 's'} removed ${some(removed.map((s, i) => `${serverLabel(s)}${drainingText(removedOpen[i]!)}`))}`);
    const changedOpen = changed.map((s) => (s.replaced ? open(p.name, s.name) : 0));
    if (changed.length > 0) {
      parts.push(
        `server${changed.length === 1 ? '' : 's'} changed ${some(changed.map((s, i) => `${s.name}: ${fieldText(s.fields).join(', ')}${s.replaced ? ` (replaced${changedOpen[i]! > 0 ? `; the old one has ${changedOpen[i]} open, draining` : ''})` : ''}`))}`,
      );
    }
    parts.push(...fieldText(p.fields));
    text.push(`pool ${p.name}: ${parts.join('; ')}`);
    return {
      pool: p.name,
      ...(added.length > 0 ? { servers_added: added.map((s) => ({ server: s.name, address: s.address, weight: s.weight, backup: s.backup })) } : {}),
      ...(removed.length > 0 ? { servers_removed: removed.map((s, i) => ({ server: s.name, address: s.address, open: removedOpen[i]! })) } : {}),
      ...(changed.length > 0
        ? {
            servers_changed: changed.map((s, i) => ({
              server: s.name,
              fields: fieldMap(s.fields),
              ...(s.replaced ? { replaced: true, open: changedOpen[i]! } : {}),
            })),
          }
        : {}),
      ...(p.fields.length > 0 ? { fields: fieldMap(p.fields) } : {}),
    };
  });
  const settings = [...changes.log.map((f) => ({ ...f, field: `log.${f.field}` })), ...changes.admin.map((f) => ({ ...f, field: `admin.${f.field}` })), ...changes.process];
  text.push(...fieldText(settings));
  return {
    listeners_changed: listeners.changed.map((l) => ({ listener: l.name, fields: fieldMap(l.fields) })),
    pools_changed: poolsChanged,
    ...(settings.length > 0 ? { settings_changed: fieldMap(settings) } : {}),
    changes: text.length > 0 ? text.join('; ') : changes.certificateFiles > 0 ? 'none (certificates re-read)' : 'none',
  };
}

/** Open connections (every thread's) of the servers named `server` that a reload took out of pool `pool`. */
function openConnections(app: App, pool: string, server: string): number {
  const gone = [
    ...(app.pools.get(pool)?.removedServers() ?? []),
    ...app.removedPools.filter((p) => p.name === pool).flatMap((p) => [...p.servers, ...p.removedServers()]),
  ];
  return gone.filter((s) => s.name === server).reduce((n, s) => n + s.active, 0);
}
