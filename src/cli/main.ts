/**
 * The command line (commander): `run`, `check`, `status`, `server`,
 * `deny`, `--version`. Library code never exits the process; only the commands
 * here decide exit codes.
 */
import { Command } from 'commander';
import { addAdminCommands } from './admin-commands.js';
import { addCheckCommand } from './check.js';
import { reportFailure } from './report.js';
import { addRunCommand } from './run.js';
import { VERSION } from './version.js';

/** The whole command line, ready to parse. */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('l4lb')
    .description('Layer 4 TCP/TLS load balancer')
    .version(VERSION, '-V, --version')
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  $ l4lb check --config /etc/l4lb/l4lb.yaml
  $ l4lb run --config /etc/l4lb/l4lb.yaml --drain-timeout 10s
  $ l4lb status
  $ l4lb server drain pg 10.0.0.12:5432 --token-file /etc/l4lb/admin.token
  $ l4lb deny add postgres 203.0.113.0/24 --ttl 1h`,
    );
  addRunCommand(program);
  addCheckCommand(program);
  addAdminCommands(program);
  return program;
}

/** Runs the command named in `argv` (as `process.argv`); bin/l4lb.js calls this. */
export function main(argv: string[]): void {
  buildProgram().parseAsync(argv).catch(reportFailure);
}
