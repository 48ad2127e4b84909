/** How the commands print a failure: one line (or one line per configuration problem) on stderr, exit code 1. */
import { AdminClientError } from '../admin/client.js';
import { ConfigError, describe } from '../errors.js';

/** Prints a configuration failure, every problem on its own line, path first, and sets exit code 1. */
export function reportConfigFailure(err: unknown): void {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n${err.problems.length} error${err.problems.length === 1 ? '' : 's'}\n`);
  } else {
    process.stderr.write(`${describe(err)}\n`);
  }
  process.exitCode = 1;
}

/** Prints an admin client failure (its message is worded for the operator) or any other error as `l4lb: MESSAGE`, and sets exit code 1. */
export function reportFailure(err: unknown): void {
  process.stderr.write(`l4lb: ${err instanceof AdminClientError ? err.message : describe(err)}\n`);
  process.exitCode = 1;
}
