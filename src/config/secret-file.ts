/**
 * Reading secret files: private keys, certificates, CAs and the admin token.
 * Every such read goes through here, so what happens after a privilege drop
 * (`user:`) is decided in one place.
 *
 * (Seam: callers use these functions; the behaviour after a drop is filled in here.)
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** Reads a secret file's bytes. Rejects with the fs error (its `code` and `path` intact). */
export async function readSecretFile(path: string): Promise<Buffer> {
  return readFile(path);
}

/** The synchronous form, for code that cannot wait (throws the fs error). */
export function readSecretFileSync(path: string): Buffer {
  return readFileSync(path);
}
