/**
 * The admin bearer token file. Read when the configuration is loaded (so
 * `l4lb check` reports a missing or empty file) and again when the admin
 * server starts. The token itself never appears in a message or a log line.
 */
import { open } from 'node:fs/promises';
import { describe } from '../errors.js';

/** A token file is one short line; anything larger is a mistake (a key or certificate, say). */
export const MAX_TOKEN_FILE_BYTES = 4096;

/**
 * Reads and trims a token file.
 *
 * @returns `{ token }`, or (a string) the problem, worded for `admin.token_file`.
 */
export async function readTokenFile(path: string): Promise<{ token: string } | string> {
  let text: string;
  try {
    const handle = await open(path, 'r');
    try {
      const info = await handle.stat();
      if (!info.isFile()) return `token file "${path}" is not a regular file`;
      if (info.size > MAX_TOKEN_FILE_BYTES) return `token file "${path}" is larger than ${MAX_TOKEN_FILE_BYTES} bytes; it should hold only the token`;
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    // describe() of an fs error names the code and the path, never the content.
    return `cannot read token file: ${describe(err)}`;
  }
  const token = text.trim();
  if (token === '') return `token file "${path}" is empty`;
  // It travels in an `Authorization: Bearer` header: one word of visible ASCII.
  if (!/^[\x21-\x7e]+$/.test(token)) return `token file "${path}" must hold one token of visible ASCII characters without spaces`;
  return { token };
}
