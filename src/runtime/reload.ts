/**
 * SIGHUP: read and validate the whole file first; apply only a good one.
 * A bad file (or a certificate that does not load, or a new port that cannot
 * be bound) is logged problem by problem and the running configuration stays.
 * After a privilege drop, a secret file the user cannot read is served from
 * the copy read at start (config/secret-file.ts); each reload says so, per file.
 */
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
    const summary = await app.reload(next);
    app.reloads.succeeded++;
    app.reloads.lastSucceeded = true;
    app.reloads.lastAt = Date.now();
    logger.info(
      {
        config: file,
        duration_ms: Date.now() - started,
        listeners_added: summary.listenersAdded,
        listeners_removed: summary.listenersRemoved,
        pools_added: summary.poolsAdded,
        pools_removed: summary.poolsRemoved,
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
