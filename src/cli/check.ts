/**
 * `l4lb check --config FILE [--diff ADMIN_URL]`: validate a configuration
 * file, and optionally preview what reloading it would change on a running
 * instance.
 */
import type { Command } from 'commander';
import { baseUrl, fetchRunning, redactForToken, resolveToken } from '../admin/client.js';
import { diffModels } from '../config/diff.js';
import { loadConfig } from '../config/load.js';
import type { Model } from '../config/model.js';
import { rereadWarnings } from '../runtime/privileges.js';
import { formatDiff, formatRuntimeChanges } from './diff-render.js';
import { reportConfigFailure, reportFailure } from './report.js';
import { runtimeChangesOf } from './runtime-client.js';

interface CheckOptions {
  config: string;
  diff?: string;
  tokenFile?: string;
  /** false with --no-resolve. */
  resolve: boolean;
}

/** Adds `check` to `program`. */
export function addCheckCommand(program: Command): void {
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
    .option('--no-resolve', "don't look up servers' host names (CI without DNS): only their form is checked")
    .addHelpText(
      'after',
      '\nExamples:\n  $ l4lb check --config /etc/l4lb/l4lb.yaml && systemctl reload l4lb\n  $ l4lb check --config /etc/l4lb/l4lb.yaml --diff http://127.0.0.1:9900',
    )
    .action(async (opts: CheckOptions) => {
      const model = await checkFile(opts.config, opts.resolve);
      if (model !== null && opts.diff !== undefined) await previewReload(model, opts.config, opts.diff, opts.tokenFile);
    });
}

/** Loads the file and prints its warnings and a one-line summary; null (exit code 1) when it is invalid. */
async function checkFile(file: string, resolve: boolean): Promise<Model | null> {
  try {
    const model = await loadConfig(file, { resolve });
    for (const w of model.warnings) process.stderr.write(`warning: ${w}\n`);
    // user: which secret files the dropped user cannot re-read (reloads keep the copy read at start).
    for (const w of rereadWarnings(model, file)) process.stderr.write(`warning: ${w}\n`);
    const names = model.pools.reduce((n, p) => n + (p.hostnames?.length ?? 0), 0);
    if (!resolve && names > 0) process.stderr.write(`note: ${names} server host name${names === 1 ? '' : 's'} not looked up (--no-resolve)\n`);
    const servers = model.pools.reduce((n, p) => n + p.servers.length + (p.hostnames ?? []).filter((h) => h.addresses.length === 0).length, 0);
    process.stdout.write(
      `${file}: ok (${model.listeners.length} listener${model.listeners.length === 1 ? '' : 's'}, ` +
        `${model.pools.length} pool${model.pools.length === 1 ? '' : 's'}, ${servers} server${servers === 1 ? '' : 's'})\n`,
    );
    return model;
  } catch (err) {
    reportConfigFailure(err);
    return null;
  }
}

/** `--diff`: the running model from the admin server, compared with `model` and printed. */
async function previewReload(model: Model, file: string, admin: string, tokenFile: string | undefined): Promise<void> {
  try {
    baseUrl(admin, '--diff'); // a bad URL is named before a missing token
    const token = await resolveToken(tokenFile, process.env, { tokenFile: model.admin?.tokenFile ?? null });
    const running = await fetchRunning(admin, token, '--diff');
    // Both sides redacted with the token's key: a changed probe payload shows, its bytes do not.
    const next = redactForToken(model, token);
    // The running model includes the runtime changes, so the diff shows their undoing; the section names them as such.
    process.stdout.write(
      `\nReload preview: ${file} against the running l4lb at ${admin}\n\n${formatDiff(diffModels(running.model, next))}${formatRuntimeChanges(runtimeChangesOf(running.runtime))}`,
    );
  } catch (err) {
    reportFailure(err);
  }
}
