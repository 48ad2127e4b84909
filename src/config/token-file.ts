/**
 * The admin bearer token file. Read when the configuration is loaded (so
 * `l4lb check` reports a missing or empty file) and again when the admin
 * server starts; the CLI clients read theirs (`--token-file`) the same way.
 * The token itself never appears in a message or a log line.
 *
 * Whoever can write the file can set the token, so (as sshd's StrictModes
 * does for authorized_keys) a file writable by every user, or owned by
 * anyone but root or the user l4lb runs as, is refused.
 */
import type { Stats } from 'node:fs';
import { describe } from '../errors.js';
import { lookupUser, plannedUser, readerGroup, rereadFix, userName } from '../runtime/privileges.js';
import { readSecret } from './secret-file.js';

/** A token file is one short line; anything larger is a mistake (a key or certificate, say). */
export const MAX_TOKEN_FILE_BYTES = 4096;

export interface TokenFileOptions {
  /**
   * The user l4lb runs as after dropping privileges (`user:`), whose files are
   * accepted like root's; default: the user `run` plans to drop to, if any.
   */
  readonly user?: string | null;
  /** With `user`: the configured `group:` (names the group in the suggested fix). */
  readonly group?: string | null;
}

/**
 * Reads and trims a token file.
 *
 * @returns `{ token }` (`kept`: the copy read at start, the file being no
 *   longer readable after a privilege drop), or (a string) the problem,
 *   worded for `admin.token_file`.
 */
export async function readTokenFile(path: string, options: TokenFileOptions = {}): Promise<{ token: string; kept: boolean } | string> {
  let text: string;
  let kept: boolean;
  let stats: Stats | null;
  try {
    const read = await readSecret(path, { maxBytes: MAX_TOKEN_FILE_BYTES });
    text = read.data.toString('utf8');
    kept = read.kept;
    stats = read.stats;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'L4LB_SECRET_NOT_FILE') return `token file "${path}" is not a regular file`;
    if (code === 'L4LB_SECRET_TOO_LARGE') return `token file "${path}" is larger than ${MAX_TOKEN_FILE_BYTES} bytes; it should hold only the token`;
    // describe() of an fs error names the code and the path, never the content.
    return `cannot read token file: ${describe(err)}`;
  }
  if (stats !== null) {
    const unsafe = ownershipProblem(path, stats, options.user === undefined ? plannedUser() : options.user, options.group ?? null);
    if (unsafe !== null) return unsafe;
  }
  const token = text.trim();
  if (token === '') return `token file "${path}" is empty`;
  // It travels in an `Authorization: Bearer` header: one word of visible ASCII.
  if (!/^[\x21-\x7e]+$/.test(token)) return `token file "${path}" must hold one token of visible ASCII characters without spaces`;
  return { token, kept };
}

/** A world-writable file, or one owned by neither root nor the user l4lb runs as; null when safe. */
function ownershipProblem(path: string, st: Stats, user: string | null, group: string | null): string | null {
  const euid = process.geteuid?.();
  const runAs = user !== null ? lookupUser(user) : undefined;
  // The name of the user l4lb runs as, for the message.
  const runsAs = user ?? (euid === undefined ? 'this user' : userName(euid));
  // The group the fix names: the one that lets l4lb read the file, as scripts/install.sh sets up (root:l4lb 0640).
  const fixGroup = user !== null ? readerGroup(user, group) : euid !== undefined && euid !== 0 ? readerGroup(userName(euid), null) : 'l4lb';
  const fix = rereadFix(path, fixGroup);
  if ((st.mode & 0o002) !== 0) {
    return `token file "${path}" is writable by every user (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): anyone could set the admin token; fix: ${fix}`;
  }
  const owners = new Set<number>([0]);
  if (euid !== undefined) owners.add(euid);
  if (runAs !== undefined) owners.add(runAs.uid);
  if (!owners.has(st.uid)) {
    return `token file "${path}" is owned by ${userName(st.uid)} (uid ${st.uid}), neither root nor the user l4lb runs as (${runsAs}): that user could set the admin token; fix: ${fix}`;
  }
  return null;
}
