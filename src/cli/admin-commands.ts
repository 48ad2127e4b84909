/** `l4lb status` and `l4lb server`: clients of a running instance's admin API. */
import { Argument, Option, type Command } from 'commander';
import { DEFAULT_ADMIN_URL, fetchStatus, resolveToken, setServerState } from '../admin/client.js';
import { adminTarget } from './admin-target.js';
import { reportFailure } from './report.js';
import { formatStatus } from './status-table.js';

/** `--admin URL` or `--config FILE` (its admin.listen), not both; neither: the default URL. */
function targetOptions(command: Command): Command {
  return command
    .addOption(new Option('--admin <url>', `admin server URL (default: ${DEFAULT_ADMIN_URL})`).conflicts('config'))
    .addOption(new Option('-c, --config <file>', "the running instance's configuration file: its admin.listen is the URL"));
}

/** Adds `status` and `server` to `program`. */
export function addAdminCommands(program: Command): void {
  targetOptions(program.command('status'))
    .description('print the listeners, routes, pools and servers of a running l4lb as a table (from its admin server)')
    .option('--json', 'print the JSON status document instead')
    .addHelpText('after', '\nExamples:\n  $ l4lb status --admin http://127.0.0.1:9900\n  $ l4lb status --config /etc/l4lb/l4lb.yaml')
    .action(async (opts: { admin?: string; config?: string; json?: boolean }) => {
      try {
        const doc = await fetchStatus(await adminTarget(opts));
        process.stdout.write(opts.json ? `${JSON.stringify(doc, null, 2)}\n` : formatStatus(doc));
      } catch (err) {
        reportFailure(err);
      }
    });

  targetOptions(
    program
      .command('server')
      .description('set the admin state of a server on a running l4lb: drain (no new connections), ready, or maint (no probes either)')
      .addArgument(new Argument('<action>', 'the new admin state').choices(['drain', 'ready', 'maint']))
      .argument('<pool>', 'pool name')
      .argument('<server>', 'server name (by default its address as written, e.g. 10.0.0.12:5432)'),
  )
    .option('--token-file <file>', 'file holding the admin token (default: the L4LB_ADMIN_TOKEN environment variable)')
    .addHelpText('after', '\nExample:\n  $ l4lb server drain pg 10.0.0.12:5432 --token-file /etc/l4lb/admin.token')
    .action(async (action: 'drain' | 'ready' | 'maint', pool: string, server: string, opts: { admin?: string; config?: string; tokenFile?: string }) => {
      try {
        const admin = await adminTarget(opts);
        const token = await resolveToken(opts.tokenFile);
        const r = await setServerState(admin, token, pool, server, action);
        process.stdout.write(
          r.from === r.to ? `pool ${r.pool}, server ${r.server}: already ${r.to}\n` : `pool ${r.pool}, server ${r.server}: ${r.from} -> ${r.to}\n`,
        );
      } catch (err) {
        reportFailure(err);
      }
    });
}
