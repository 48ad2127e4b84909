/** `l4lb status`, `l4lb server` and `l4lb deny`: clients of a running instance's admin API. */
import { Argument, InvalidArgumentError, Option, type Command } from 'commander';
import { DEFAULT_ADMIN_URL, fetchStatus, resolveToken, setServerState } from '../admin/client.js';
import { adminTarget } from './admin-target.js';
import { reportFailure } from './report.js';
import { addDeny, addServer, removeDeny, removeServer } from './runtime-client.js';
import { formatStatus } from './status-table.js';

type ServerAction = 'drain' | 'ready' | 'maint' | 'add' | 'remove';

interface ServerOptions {
  admin?: string;
  config?: string;
  tokenFile?: string;
  name?: string;
  weight?: number;
  backup?: boolean;
}

function weightArg(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n < 1 || n > 256) throw new InvalidArgumentError('expected an integer from 1 to 256');
  return n;
}

/** `server add|remove`: runtime changes; the rest set the admin state. Prints one line saying what changed. */
async function serverCommand(action: ServerAction, pool: string, target: string, opts: ServerOptions): Promise<string> {
  const admin = await adminTarget(opts);
  if (action !== 'add' && (opts.name !== undefined || opts.weight !== undefined || opts.backup !== undefined)) {
    throw new InvalidArgumentError('--name, --weight and --backup go with "server add" only');
  }
  const token = await resolveToken(opts.tokenFile);
  if (action === 'add') {
    const r = await addServer(admin, token, pool, {
      address: target,
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      ...(opts.weight !== undefined ? { weight: opts.weight } : {}),
      ...(opts.backup !== undefined ? { backup: opts.backup } : {}),
    });
    const ramp = r.slow_start_ms > 0 ? `, slow start ${r.slow_start_ms}ms` : '';
    return `pool ${r.pool}: server ${r.server} (${r.address}) added, weight ${r.weight}${r.backup ? ', backup' : ''}${ramp}; until the next reload\n`;
  }
  if (action === 'remove') {
    const r = await removeServer(admin, token, pool, target);
    const open = r.open > 0 ? `; ${r.open} open connection${r.open === 1 ? '' : 's'} draining` : '';
    return `pool ${r.pool}: server ${r.server} (${r.address}) removed${open}; until the next reload\n`;
  }
  const r = await setServerState(admin, token, pool, target, action);
  return r.from === r.to ? `pool ${r.pool}, server ${r.server}: already ${r.to}\n` : `pool ${r.pool}, server ${r.server}: ${r.from} -> ${r.to}\n`;
}

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
      .description(
        'change a server on a running l4lb: drain (no new connections), ready, or maint (no probes either); ' +
          'add (a new server, ADDRESS as host:port) or remove (drain, then remove); add and remove last until the next reload or restart',
      )
      .addArgument(new Argument('<action>', 'what to do').choices(['drain', 'ready', 'maint', 'add', 'remove']))
      .argument('<pool>', 'pool name')
      .argument('<server>', 'server name (by default its address as written, e.g. 10.0.0.12:5432); for add: its address'),
  )
    .option('--token-file <file>', 'file holding the admin token (default: the L4LB_ADMIN_TOKEN environment variable)')
    .option('--name <name>', 'add: the server name (default: the address)')
    .option('--weight <n>', 'add: relative share of new connections, 1 to 256 (default 1)', weightArg)
    .option('--backup', 'add: used only when no primary server of the pool is up')
    .addHelpText(
      'after',
      '\nExamples:\n  $ l4lb server drain pg 10.0.0.12:5432 --token-file /etc/l4lb/admin.token\n' +
        '  $ l4lb server add pg 10.0.0.14:5432 --name pg4 --weight 2\n  $ l4lb server remove pg pg4',
    )
    .action(async (action: ServerAction, pool: string, server: string, opts: ServerOptions) => {
      try {
        process.stdout.write(await serverCommand(action, pool, server, opts));
      } catch (err) {
        reportFailure(err);
      }
    });

  targetOptions(
    program
      .command('deny')
      .description('refuse (add) or allow again (remove) new connections from a client network on a listener of a running l4lb; lasts until --ttl passes, or the next reload or restart')
      .addArgument(new Argument('<action>', 'what to do').choices(['add', 'remove']))
      .argument('<listener>', 'listener name')
      .argument('<cidr>', 'client address or network, e.g. 203.0.113.7 or 203.0.113.0/24'),
  )
    .option('--ttl <duration>', 'add: lift the deny after this long, e.g. 10m or 1h (default: at the next reload)')
    .option('--token-file <file>', 'file holding the admin token (default: the L4LB_ADMIN_TOKEN environment variable)')
    .addHelpText('after', '\nExamples:\n  $ l4lb deny add postgres 203.0.113.0/24 --ttl 1h\n  $ l4lb deny remove postgres 203.0.113.0/24')
    .action(async (action: 'add' | 'remove', listener: string, cidr: string, opts: { admin?: string; config?: string; tokenFile?: string; ttl?: string }) => {
      try {
        if (action === 'remove' && opts.ttl !== undefined) throw new InvalidArgumentError('--ttl goes with "deny add" only');
        const admin = await adminTarget(opts);
        const token = await resolveToken(opts.tokenFile);
        if (action === 'add') {
          const r = await addDeny(admin, token, listener, cidr, opts.ttl);
          const until = r.expires === null ? 'until the next reload' : `until ${r.expires}`;
          process.stdout.write(`listener ${r.listener}: ${r.cidr} denied ${until}${r.refreshed ? ' (was denied already; new ttl)' : ''}\n`);
        } else {
          const r = await removeDeny(admin, token, listener, cidr);
          process.stdout.write(`listener ${r.listener}: ${r.cidr} no longer denied\n`);
        }
      } catch (err) {
        reportFailure(err);
      }
    });
}
