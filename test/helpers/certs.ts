/**
 * Throw-away TLS material for tests, made by scripts/gen-test-certs.sh (see
 * its header for the list: a test CA, a.test, b.test, wild.test,
 * default.test, expired.test, future.test, backend.test, a client CA and
 * client certificates; every key EC P-256).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const SCRIPT = fileURLToPath(new URL('../../scripts/gen-test-certs.sh', import.meta.url));

/** Why openssl cannot make certificates here (with the fix), or null when it can. */
export const opensslMissing: string | null = (() => {
  const r = spawnSync('openssl', ['version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `openssl is needed for the test certificates and is not runnable: ${r.error.message} (apt-get install openssl)`;
  return r.status === 0 ? null : `openssl is needed for the test certificates: openssl version exited ${r.status}`;
})();

/** Runs scripts/gen-test-certs.sh into `dir` (created if need be); throws with its stderr when it fails. */
export function generateTestCerts(dir: string): void {
  const gen = spawnSync('bash', [SCRIPT, dir], { encoding: 'utf8', timeout: 60_000 });
  if (gen.status !== 0) throw new Error(`gen-test-certs.sh failed (${gen.status}): ${gen.stderr}`);
}

export interface TestCerts {
  /** The directory holding every `<name>.crt` and `<name>.key`. */
  readonly dir: string;
  /** The path of `name` in the directory. */
  file(name: string): string;
  /** The paths of `name`'s certificate and key, as config `certs` entries take them. */
  pair(name: string): { cert: string; key: string };
  /** The contents of `name`'s certificate and key, as Node's TLS options take them. */
  pem(name: string): { cert: Buffer; key: Buffer };
  /** The test CA's certificate (it signed every server certificate). */
  readonly ca: Buffer;
}

let made: TestCerts | undefined;

/**
 * The test certificates, generated once per test file into a fresh
 * temporary directory, removed when the file's tests end. Fresh rather
 * than t.testdir(): that one is fixed per test file, and two runs of one
 * file at once would regenerate each other's CA in the middle of the tests.
 */
export function testCerts(): TestCerts {
  if (made !== undefined) return made;
  const dir = mkdtempSync(join(tmpdir(), 'l4lb-certs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  generateTestCerts(dir);
  const file = (name: string): string => join(dir, name);
  made = {
    dir,
    file,
    pair: (name) => ({ cert: file(`${name}.crt`), key: file(`${name}.key`) }),
    pem: (name) => ({ cert: readFileSync(file(`${name}.crt`)), key: readFileSync(file(`${name}.key`)) }),
    ca: readFileSync(file('ca.crt')),
  };
  return made;
}
