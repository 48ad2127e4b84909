/** `l4lb status` and `l4lb server`: clients of a running instance's admin API. */
import { Argument, type Command } from 'commander';
import { DEFAULT_ADMIN_URL, fetchStatus, formatStatus, resolveToken, setServerState } from '../admin/client.js';
import { reportFailure } from './report.js';

/** Adds `status` and `server` to `program`. */
export function addAdminCommands(program: Command): void {
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
        reportFailure(err);
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
        reportFailure(err);
      }
    });
}
