/**
 * `l4lb run --config FILE`: the load balancer in the foreground, JSON logs
 * on stdout, driven by signals (SIGHUP reload, SIGTERM/SIGINT drain and stop).
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { loadConfig } from '../config/load.js';
import { parseDuration } from '../config/duration.js';
import { DEFAULTS } from '../defaults.js';
import { L4lbError, describe } from '../errors.js';
import { createLogger } from '../log.js';
import { App } from '../runtime/app.js';
import { describeUnreadable, dropPrivileges, planPrivilegeDrop, rereadReport, unreadableFix } from '../runtime/privileges.js';
import { reloadFromFile } from '../runtime/reload.js';
import { attachSignals, catchSignals, onSignalDuringStart } from '../runtime/signals.js';
import { sdNotify } from '../runtime/systemd.js';
import { reportConfigFailure } from './report.js';
import { VERSION } from './version.js';

/**
 * After a stop signal, the process exits at most this long after the drain
 * timeout, whatever is still closing (the stop's own steps take a few
 * milliseconds, each bounded at a fraction of this).
 */
const STOP_MARGIN_MS = 1_000;

/** `--drain-timeout`: a duration, or plain milliseconds. */
function durationOption(value: string): number {
  const ms = parseDuration(/^\d+$/.test(value) ? Number(value) : value);
  if (typeof ms === 'string') throw new InvalidArgumentError(ms);
  return ms;
}

/** Adds `run` to `program`. */
export function addRunCommand(program: Command): void {
  program
    .command('run')
    .description('run the load balancer in the foreground; JSON logs to stdout')
    .requiredOption('-c, --config <file>', 'configuration file (.yaml, .yml or .json)')
    .option('--drain-timeout <duration>', 'on SIGTERM/SIGINT, how long open connections may finish', durationOption, DEFAULTS.drainTimeoutMs)
    .addHelpText(
      'after',
      `
Signals:
  SIGHUP           reload the configuration and re-read certificates (during start: once started)
  SIGTERM, SIGINT  GET /ready answers 503 at once; listeners keep accepting for the configured
                   grace (default 0s); then stop accepting, let open connections finish up to
                   --drain-timeout, exit 0 (a second signal during the grace starts the drain at
                   once, otherwise it closes everything at once; during start: stop once
                   started, a second one exits at once)

Example:
  $ l4lb run --config conf/demo.yaml`,
    )
    .action(async (opts: { config: string; drainTimeout: number }) => {
      await run(opts.config, opts.drainTimeout);
    });
}

/**
 * Runs the load balancer until a stop signal: start (every listener bound,
 * or exit 1), drop privileges, tell systemd, then serve reloads and stops.
 */
async function run(configFile: string, drainMs: number): Promise<void> {
  // First thing (bin/l4lb.js has usually done it already): a SIGHUP during
  // start must not kill the process, a SIGTERM must not be lost.
  catchSignals();
  onSignalDuringStart((signal) => {
    process.stderr.write(`l4lb: second ${signal} during start: exiting at once\n`);
    process.exit(1);
  });
  let model;
  try {
    model = await loadConfig(configFile);
  } catch (err) {
    reportConfigFailure(err);
    return;
  }
  // The token file's owner rule accepts the user we are about to become.
  planPrivilegeDrop(model.user);
  const root = createLogger(model.log.level);
  const logger = root.logger;
  const app = new App(model, logger);
  onSignalDuringStart((signal) => {
    // Exiting closes every socket start has bound so far.
    logger.warn({ signal }, 'second stop signal during start: exiting at once');
    root.flushSync();
    process.exit(1);
  });
  process.on('uncaughtException', (err) => {
    // Unknown state: log it and exit non-zero so the supervisor restarts us.
    try {
      logger.fatal({ err }, 'uncaught exception');
      root.flushSync();
    } catch {
      // The log is already closed (we were exiting): stderr still works.
      process.stderr.write(`l4lb: uncaught exception: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exit(70);
  });
  try {
    await app.start();
  } catch (err) {
    logger.error({ code: err instanceof L4lbError ? err.code : undefined, err: describe(err) }, 'start failed');
    await root.close();
    process.exit(1);
  }
  if (model.user !== null) {
    // While still root: name each file the user cannot read (reloads keep the copy read at start, or fail for the configuration).
    const report = rereadReport(model, configFile);
    if (report !== null && report.known) {
      for (const u of report.unreadable) {
        logger.warn(
          { path: u.path, file: u.file, user: report.user, error: u.error, fix: unreadableFix(u, report.user, report.group) },
          describeUnreadable(u, report.user, report.group),
        );
      }
    } else if (report !== null) {
      logger.info({ user: report.user, reason: report.reason }, 'cannot tell which files the user can read after the privilege drop');
    }
    // Every socket is bound: root is no longer needed. Failing to drop is fatal.
    try {
      const ids = dropPrivileges(model.user, model.group);
      logger.info({ user: model.user, uid: ids.uid, gid: ids.gid }, 'privileges dropped');
    } catch (err) {
      logger.fatal({ code: err instanceof L4lbError ? err.code : undefined, err: describe(err) }, 'cannot drop privileges');
      await app.destroy();
      await root.close();
      process.exit(1);
    }
  }
  for (const w of model.warnings) logger.warn({ warning: w }, 'configuration warning');
  logger.info({ version: VERSION, config: configFile, listeners: model.listeners.length, pools: model.pools.length }, 'started');
  const notifyFailed = (err: Error): void => logger.warn({ err: describe(err) }, 'systemd notification failed');
  const status = (): string => `serving ${app.listeners.length} listener(s), ${app.pools.size} pool(s)`;
  // Every listener is bound: tell systemd (Type=notify) we are ready, before a signal held during start (RELOADING, STOPPING) is acted on.
  await sdNotify({ READY: '1', STATUS: status() }, notifyFailed);
  attachSignals({
    logger,
    stop: async () => {
      // The exit comes within the grace, the drain timeout and a small margin, whatever holds on (a safety net: the stop's own steps are bounded).
      const graceMs = app.model.grace;
      const late = setTimeout(() => {
        logger.warn({ grace_ms: graceMs, drain_timeout_ms: drainMs, waited_ms: graceMs + drainMs + STOP_MARGIN_MS }, 'stop is taking longer than the drain timeout: exiting now');
        void root.close().then(() => process.exit(0));
      }, graceMs + drainMs + STOP_MARGIN_MS);
      // Not awaited: the drain starts now, not once systemd-notify has run.
      void sdNotify({ STOPPING: '1', STATUS: 'draining' }, notifyFailed);
      await app.stop(drainMs);
      clearTimeout(late);
      logger.info('stopped');
      await root.close();
      process.exit(0);
    },
    // Every session (also on listeners a reload retired), probes, the admin server: the graceful stop then ends at once.
    forceStop: () => void app.destroy(),
    skipGrace: () => app.skipGrace(),
    reload: async () => {
      await sdNotify({ RELOADING: '1', STATUS: 'reloading' }, notifyFailed);
      const ok = await reloadFromFile(app, configFile, logger);
      await sdNotify({ READY: '1', STATUS: ok ? status() : `${status()}; last reload FAILED (see log)` }, notifyFailed);
    },
  });
}
