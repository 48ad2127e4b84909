/**
 * Tests that need what a machine may lack (root, openssl, a systemd tool, a
 * browser): skipped with the reason printed on a developer's machine, failed
 * when CI is set, never silently passed.
 */
import type { Test } from 'tap';
import { inCi } from './peers.js';

/**
 * Call first in such a test (or at the top of such a file, with the root
 * `t`): true when `missing` is null; else fails `t` (CI) or skips it with
 * the reason printed, and returns false: the caller then returns.
 * @param missing what is missing and how to get it, or null
 */
export function need(t: Test, missing: string | null): boolean {
  if (missing === null) return true;
  if (inCi()) {
    t.fail(`${missing}; it is required when CI is set`);
  } else {
    console.error(`# skipping "${t.name}": ${missing}; set CI to make this a failure`);
    t.plan(0, missing);
  }
  return false;
}

/**
 * The `skip` option of a test that needs what `missing` names: the reason
 * on a developer's machine; false when nothing is missing or CI is set (the
 * test then runs, and should fail on `missing` first).
 * @param what the test, for the printed line
 */
export function skipUnlessCi(missing: string | null, what: string): string | false {
  if (missing === null || inCi()) return false;
  console.error(`# skipping ${what}: ${missing}; set CI to make this a failure`);
  return missing;
}
