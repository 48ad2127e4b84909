/**
 * The command line: `run`, `check`, `status`, `server`, `--version` (commander). Library code
 * never exits the process; only this file decides exit codes.
 */
import { readFileSync } from 'node:fs';
import { Argument, Command, InvalidArgumentError } from 'commander';
import { AdminClientError, DEFAULT_ADMIN_URL, baseUrl, fetchConfig, fetchStatus, formatStatus, redactForToken, resolveToken, setServerState } from './admin/client.js';
import { diffModels, formatDiff } from './runtime/diff.js';
import { loadConfig } from './config/load.js';
import { parseDuration } from './config/duration.js';
import { ConfigError, L4lbError, describe } from './errors.js';
import { DEFAULTS } from './defaults.js';
import { createLogger } from './log.js';
import { App } from './runtime/app.js';
import { attachSignals, catchSignals, onSignalDuringStart } from './runtime/signals.js';
import { reloadFromFile } from './runtime/reload.js';
import { sdNotify } from './runtime/systemd.js';
import { describeUnreadable, dropPrivileges, planPrivilegeDrop, rereadReport, rereadWarnings, unreadableFix } from './runtime/privileges.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

function durationOption(value: string): number {
  const ms = parseDuration(/^\d+$/.test(value) ? Number(value) : value);
  if (typeof ms === 'string') throw new InvalidArgumentError(ms);
  return ms;
}

/** Print a configuration failure: every problem on its own line, path first. */
function reportConfigFailure(err: unknown): void {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n${err.problems.length} error${err.problems.length === 1 ? '' : 's'}\n`);
  } else {
    process.stderr.write(`${describe(err)}\n`);
  }
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('l4lb')
    .description('Layer 4 TCP/TLS load balancer')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  $ l4lb check --config /etc/l4lb/l4lb.yaml
  $ l4lb run --config /etc/l4lb/l4lb.yaml --drain-timeout 10s
  $ l4lb status
  $ l4lb server drain pg 10.0.0.12:5432 --token-file /etc/l4lb/admin.token`,
    );

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
  SIGTERM, SIGINT  stop accepting, let open connections finish up to --drain-timeout, exit 0
                   (a second signal closes everything at once; during start: stop once started,
                   a second one exits at once)

Example:
  $ l4lb run --config conf/demo.yaml`,
    )
    .action(async (opts: { config: string; drainTimeout: number }) => {
      await run(opts.config, opts.drainTimeout);
    });

  program
    .command('check')
    .description('validate a configuration file: exit 0, or print every error and exit 1')
    .requiredOption('-c, --config <file>', 'configuration file (.yaml, .yml or .json)')
    .option(
      '--diff <admin-url>',
      'then preview a reload against the l4lb running at this admin URL: listeners, pools and servers added, removed and changed, and the share of source_hash clients that move',
    )
    .option(
      '--token-file <file>',
      "with --diff: file holding the admin token (default: L4LB_ADMIN_TOKEN, else the checked file's admin.token_file)",
    )
    .addHelpText(
      'after',
      '\nExamples:\n  $ l4lb check --config /etc/l4lb/l4lb.yaml && systemctl reload l4lb\n  $ l4lb check --config /etc/l4lb/l4lb.yaml --diff http://127.0.0.1:9900',
    )
    .action(async (opts: { config: string; diff?: string; tokenFile?: string }) => {
      let model;
      try {
        model = await loadConfig(opts.config);
        for (const w of model.warnings) process.stderr.write(`warning: ${w}\n`);
        // user: which secret files the dropped user cannot re-read (reloads keep the copy read at start).
        for (const w of rereadWarnings(model, opts.config)) process.stderr.write(`warning: ${w}\n`);
        const servers = model.pools.reduce((n, p) => n + p.servers.length, 0);
        process.stdout.write(
          `${opts.config}: ok (${model.listeners.length} listener${model.listeners.length === 1 ? '' : 's'}, ` +
            `${model.pools.length} pool${model.pools.length === 1 ? '' : 's'}, ${servers} server${servers === 1 ? '' : 's'})\n`,
        );
      } catch (err) {
        reportConfigFailure(err);
        process.exitCode = 1;
        return;
      }
      if (opts.diff === undefined) return;
      try {
        baseUrl(opts.diff, '--diff'); // a bad URL is named before a missing token
        const token = await resolveToken(opts.tokenFile, process.env, { tokenFile: model.admin?.tokenFile ?? null });
        const running = await fetchConfig(opts.diff, token, '--diff');
        // Both sides redacted with the token's key: a changed probe payload shows, its bytes do not.
        const next = redactForToken(model, token);
        process.stdout.write(`\nReload preview: ${opts.config} against the running l4lb at ${opts.diff}\n\n${formatDiff(diffModels(running, next))}`);
      } catch (err) {
        process.stderr.write(`l4lb: ${err instanceof AdminClientError ? err.message : describe(err)}\n`);
        process.exitCode = 1;
      }
    });

  addAdminCommands(program);
  return program;
}

/** `status` and `server`: clients of a running instance's admin API. */
function addAdminCommands(program: Command): void {
  /** Prints an admin client failure and sets exit code 1. */
  const failed = (err: unknown): void => {
    process.stderr.write(`l4lb: ${err instanceof AdminClientError ? err.message : describe(err)}\n`);
    process.exitCode = 1;
  };
  program
    .command('status')
    .description('print the listeners, pools and servers of a running l4lb as a table (from its admin server)')
    .option('--admin <url>', 'admin server URL', DEFAULT_ADMIN_URL)
    .option('--json', 'print the JSON status document instead')
    .addHelpText('after', '\nExample:\n  $ l4lb status --admin http://127.0.0.1:9900')
    .action(async (opts: { admin: string; json?: boolean }) => {
      try {
        const doc = await fetchStatus(opts.admin);
        process.stdout.write(opts.json ? `${JSON.stringify(doc, null, 2)}\n` : formatStatus(doc));
      } catch (err) {
        failed(err);
      }
    });

  program
    .command('server')
    .description('set the admin state of a server on a running l4lb: drain (no new connections), ready, or maint (no probes either)')
    .addArgument(new Argument('<action>', 'the new admin state').choices(['drain', 'ready', 'maint']))
    .argument('<pool>', 'pool name')
    .argument('<server>', 'server name (by default its address as written, e.g. 10.0.0.12:5432)')
    .option('--admin <url>', 'admin server URL', DEFAULT_ADMIN_URL)
    .option('--token-file <file>', 'file holding the admin token (default: the L4LB_ADMIN_TOKEN environment variable)')
    .addHelpText('after', '\nExample:\n  $ l4lb server drain pg 10.0.0.12:5432 --token-file /etc/l4lb/admin.token')
    .action(async (action: 'drain' | 'ready' | 'maint', pool: string, server: string, opts: { admin: string; tokenFile?: string }) => {
      try {
        const token = await resolveToken(opts.tokenFile);
        const r = await setServerState(opts.admin, token, pool, server, action);
        process.stdout.write(
          r.from === r.to ? `pool ${r.pool}, server ${r.server}: already ${r.to}\n` : `pool ${r.pool}, server ${r.server}: ${r.from} -> ${r.to}\n`,
        );
      } catch (err) {
        failed(err);
      }
    });
}

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
    process.exitCode = 1;
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
  logger.info({ version: pkg.version, config: configFile, listeners: model.listeners.length, pools: model.pools.length }, 'started');
  const notifyFailed = (err: Error): void => logger.warn({ err: describe(err) }, 'systemd notification failed');
  const status = (): string => `serving ${app.listeners.length} listener(s), ${app.pools.size} pool(s)`;
  // Every listener is bound: tell systemd (Type=notify) we are ready, before a signal held during start (RELOADING, STOPPING) is acted on.
  await sdNotify({ READY: '1', STATUS: status() }, notifyFailed);
  attachSignals({
    logger,
    stop: async () => {
      await sdNotify({ STOPPING: '1', STATUS: 'draining' }, notifyFailed);
      await app.stop(drainMs);
      logger.info('stopped');
      await root.close();
      process.exit(0);
    },
    // Every session (also on listeners a reload retired), probes, the admin server: the graceful stop then ends at once.
    forceStop: () => void app.destroy(),
    reload: async () => {
      await sdNotify({ RELOADING: '1', STATUS: 'reloading' }, notifyFailed);
      const ok = await reloadFromFile(app, configFile, logger);
      await sdNotify({ READY: '1', STATUS: ok ? status() : `${status()}; last reload FAILED (see log)` }, notifyFailed);
    },
  });
}

export function main(argv: string[]): void {
  buildProgram()
    .parseAsync(argv)
    .catch((err: unknown) => {
      process.stderr.write(`l4lb: ${describe(err)}\n`);
      process.exitCode = 1;
    });
}
