/**
 * Dropping root after binding, for runs without systemd (`user:`/`group:`).
 * Supplementary groups go first (initgroups), then the group, then the user:
 * once the uid changes, the process can no longer change its groups.
 *
 * After the drop, a reload reads files as that user: secret files it cannot
 * read are served from the copy read at start (config/secret-file.ts).
 * {@link rereadReport} tells, before the drop, exactly which files those are.
 */
import { closeSync, constants as fsConstants, openSync, readFileSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import type { Model } from '../config/model.js';
import { secretFiles } from '../config/secret-file.js';
import { L4lbError } from '../errors.js';

/** Node has process.initgroups on POSIX; @types/node 20 leaves it out. */
const proc = process as NodeJS.Process & { initgroups?: (user: string | number, extraGroup: string | number) => void };

export class PrivilegeDropError extends L4lbError {
  constructor(message: string, cause?: unknown) {
    super('L4LB_PRIVILEGE_DROP', message, { cause });
  }
}

export interface Dropped {
  readonly uid: number;
  readonly gid: number;
}

/**
 * Become `user` (and `group`, else the user's primary group). Throws
 * PrivilegeDropError if that is impossible, so l4lb never keeps running as
 * root by mistake.
 */
export function dropPrivileges(user: string, group: string | null): Dropped {
  if (process.setuid === undefined || process.setgid === undefined || proc.initgroups === undefined) {
    throw new PrivilegeDropError('dropping privileges is not supported on this platform');
  }
  const gid = group ?? primaryGroup(user);
  if (gid === undefined) {
    throw new PrivilegeDropError(`cannot find the primary group of user "${user}" in /etc/passwd: set group: explicitly`);
  }
  try {
    if (process.getuid?.() === 0) proc.initgroups(user, gid);
    process.setgid(gid);
    process.setuid(user);
  } catch (err) {
    throw new PrivilegeDropError(`cannot become user "${user}" and group "${gid}": ${(err as Error).message}`, err);
  }
  return { uid: process.getuid!(), gid: process.getgid!() };
}

/** The primary gid of `user` from /etc/passwd (name or numeric uid). */
function primaryGroup(user: string): number | undefined {
  return lookupUser(user)?.gid;
}

/** Fields of the first line of an /etc/passwd-style file whose name or id is `key`. */
function lookupEntry(file: string, key: string): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 4 && (f[0] === key || f[2] === key)) return f;
  }
  return undefined;
}

/** A user's name and ids from /etc/passwd (`user`: name or numeric uid). */
export function lookupUser(user: string): { readonly name: string; readonly uid: number; readonly gid: number } | undefined {
  const f = lookupEntry('/etc/passwd', user);
  return f === undefined ? undefined : { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) };
}

/** A user's name for a uid, or the number when /etc/passwd has none. */
export function userName(uid: number): string {
  return lookupEntry('/etc/passwd', String(uid))?.[0] ?? String(uid);
}

/** A group's name for a gid, or the number when /etc/group has none. */
export function groupName(gid: number): string {
  return lookupEntry('/etc/group', String(gid))?.[0] ?? String(gid);
}

/** The user the process will run as after `user:` (set by `run` once the file is loaded); null: it stays as started. */
let planned: string | null = null;

/** `run`: the process will drop to `user` once bound (the token file's owner rule accepts that user from the start). */
export function planPrivilegeDrop(user: string | null): void {
  planned = user;
}

export function plannedUser(): string | null {
  return planned;
}

/** The group a file should belong to so that `user` (with `group:`) can read it: the configured group, else the user's primary group. */
export function readerGroup(user: string, group: string | null): string {
  if (group !== null) return group;
  const gid = lookupUser(user)?.gid;
  return gid === undefined ? user : groupName(gid);
}

/** A path as one shell word. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/** The command that lets `group` read `file` while only root may change it: what scripts/install.sh does for the admin token. */
export function rereadFix(file: string, group: string): string {
  const f = shellWord(file);
  return `chown root:${shellWord(group)} ${f} && chmod 0640 ${f}`;
}

/** One file the target user cannot read. */
export interface Unreadable {
  /** Configuration path (`listeners[0].tls.certs[0].key`), or `config` for the configuration file itself. */
  readonly path: string;
  readonly file: string;
  /** errno code of the attempt (EACCES, ...). */
  readonly error: string;
  /** true: the file's own mode lets the user read it; a directory above it does not let the user through. */
  readonly directory: boolean;
}

export type RereadReport =
  | { readonly user: string; readonly group: string; readonly known: true; readonly unreadable: readonly Unreadable[] }
  | { readonly user: string; readonly group: string; readonly known: false; readonly reason: string };

/**
 * Which files of `model` (its secrets, and `configFile`) the user of
 * `user:` will not be able to read after the drop, tried for real: as root,
 * the effective user, group and supplementary groups are switched to that
 * user's for the attempt and back (files are opened, nothing is read); as
 * that user, files are simply opened. Any other user cannot tell.
 */
export function rereadReport(model: Model, configFile: string): RereadReport | null {
  if (model.user === null) return null;
  const user = model.user;
  const group = readerGroup(user, model.group);
  const files = [{ path: 'config', file: configFile }, ...secretFiles(model)];
  const target = lookupUser(user);
  if (target === undefined) return { user, group, known: false, reason: `user "${user}" is not in /etc/passwd` };
  const euid = process.geteuid?.();
  if (euid === target.uid) return { user, group, known: true, unreadable: probe(files, null) };
  if (euid !== 0 || process.seteuid === undefined || process.setegid === undefined || process.setgroups === undefined || proc.initgroups === undefined) {
    return { user, group, known: false, reason: `only root (or ${user} itself) can try which files ${user} may read` };
  }
  // Each file's status as root first: the mode tells a closed directory from a closed file.
  const stats = new Map<string, Stats>();
  for (const { file } of files) {
    try {
      stats.set(file, statSync(file));
    } catch {
      // missing: the configuration check reports it
    }
  }
  const savedGroups = process.getgroups!();
  const savedEgid = process.getegid!();
  // glibc switches every thread's ids, libuv's pool included: safe here because
  // this runs synchronously, after start, when no other file is being opened.
  try {
    proc.initgroups(user, model.group ?? target.gid);
    process.setegid(model.group ?? target.gid);
    process.seteuid(target.uid);
    return { user, group, known: true, unreadable: probe(files, { uid: target.uid, groups: new Set(process.getgroups!()), stats }) };
  } catch (err) {
    return { user, group, known: false, reason: `cannot take ${user}'s identity to try: ${(err as Error).message}` };
  } finally {
    // Back to root; if that fails the process must not go on in between identities.
    try {
      process.seteuid(0);
      process.setegid(savedEgid);
      process.setgroups(savedGroups);
    } catch (err) {
      throw new PrivilegeDropError(`cannot return to root after trying file access as ${user}: ${(err as Error).message}`, err);
    }
  }
}

function probe(
  files: ReadonlyArray<{ readonly path: string; readonly file: string }>,
  asRoot: { uid: number; groups: ReadonlySet<number>; stats: ReadonlyMap<string, Stats> } | null,
): Unreadable[] {
  const out: Unreadable[] = [];
  for (const { path, file } of files) {
    try {
      closeSync(openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      if (code === 'ENOENT') continue; // missing for everyone: the configuration check reports it
      const st = asRoot?.stats.get(file);
      const modeAllows = st !== undefined && (st.uid === asRoot!.uid ? st.mode & 0o400 : asRoot!.groups.has(st.gid) ? st.mode & 0o040 : st.mode & 0o004) !== 0;
      out.push({ path, file, error: code, directory: modeAllows });
    }
  }
  return out;
}

/** How to let `user` read the file (or get through to it). */
export function unreadableFix(u: Unreadable, user: string, group: string): string {
  return u.directory ? `let ${user} search every directory above ${u.file} (e.g. chmod o+x on the one that is closed)` : rereadFix(u.file, group);
}

/** Why `user` cannot read it: the errno code, or the closed directory. */
function unreadableCause(u: Unreadable, user: string): string {
  return u.directory ? `a directory above it (${dirname(u.file)}, or one above) does not let ${user} through` : u.error;
}

/** One sentence per unreadable file: what happens at a reload, and the fix. */
export function describeUnreadable(u: Unreadable, user: string, group: string): string {
  const head = u.path === 'config' ? `user ${user} cannot read the configuration file ${u.file}` : `${u.path}: user ${user} cannot read ${u.file}`;
  const effect =
    u.path === 'config'
      ? 'after the privilege drop every reload will fail; fix'
      : 'after the privilege drop, reloads keep the copy read at start; to let reloads see new versions';
  return `${head} (${unreadableCause(u, user)}): ${effect}: ${unreadableFix(u, user, group)}`;
}

/** `l4lb check` with `user:`: one line per file the user cannot read (or why that cannot be told). */
export function rereadWarnings(model: Model, configFile: string): string[] {
  const report = rereadReport(model, configFile);
  if (report === null) return [];
  if (!report.known) return [`user: cannot tell which files ${report.user} can read after the privilege drop: ${report.reason}`];
  return report.unreadable.map((u) => describeUnreadable(u, report.user, report.group));
}
