/**
 * The command line: `run`, `check`, `--version` (commander). Library code
 * never exits the process; only this file decides exit codes.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig } from './config/load.js';
import { parseDuration } from './config/duration.js';
import { ConfigError, L4lbError, describe } from './errors.js';
import { DEFAULTS } from './defaults.js';
import { createLogger } from './log.js';
import { App } from './runtime/app.js';
import { installSignals } from './runtime/signals.js';

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
  $ l4lb run --config /etc/l4lb/l4lb.yaml --drain-timeout 10s`,
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
  SIGTERM, SIGINT  stop accepting, let open connections finish up to --drain-timeout, exit 0
                   (a second signal closes them at once)

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
    .addHelpText('after', '\nExample:\n  $ l4lb check --config /etc/l4lb/l4lb.yaml && systemctl reload l4lb')
    .action(async (opts: { config: string }) => {
      try {
        const model = await loadConfig(opts.config);
        const servers = model.pools.reduce((n, p) => n + p.servers.length, 0);
        process.stdout.write(
          `${opts.config}: ok (${model.listeners.length} listener${model.listeners.length === 1 ? '' : 's'}, ` +
            `${model.pools.length} pool${model.pools.length === 1 ? '' : 's'}, ${servers} server${servers === 1 ? '' : 's'})\n`,
        );
      } catch (err) {
        reportConfigFailure(err);
        process.exitCode = 1;
      }
    });

  return program;
}

async function run(configFile: string, drainMs: number): Promise<void> {
  let model;
  try {
    model = await loadConfig(configFile);
  } catch (err) {
    reportConfigFailure(err);
    process.exitCode = 1;
    return;
  }
  const root = createLogger(model.log.level);
  const logger = root.logger;
  const app = new App(model, logger);
  process.on('uncaughtException', (err) => {
    // Unknown state: log it and exit non-zero so the supervisor restarts us.
    logger.fatal({ err }, 'uncaught exception');
    root.flushSync();
    process.exit(70);
  });
  try {
    await app.start();
  } catch (err) {
    logger.error({ code: err instanceof L4lbError ? err.code : undefined, err: describe(err) }, 'start failed');
    await root.close();
    process.exit(1);
  }
  logger.info({ version: pkg.version, config: configFile, listeners: model.listeners.length, pools: model.pools.length }, 'started');
  installSignals({
    logger,
    stop: async () => {
      await app.stop(drainMs);
      logger.info('stopped');
      await root.close();
      process.exit(0);
    },
    forceStop: () => {
      for (const l of app.listeners) l.shutdown();
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
