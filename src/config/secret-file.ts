/**
 * Reading secret files: private keys, certificates, CAs, the admin token and
 * probe passwords.
 * Every such read goes through here, so what happens after a privilege drop
 * (`user:`) is decided in one place:
 *
 * - What is read while the process is root is kept in memory (the last copy
 *   of each file read as root).
 * - Every read opens the file again, so a renewed certificate takes effect on
 *   the next reload whenever the process can read it.
 * - A read refused with EACCES or EPERM (a root-only file, after the drop to
 *   `user:`) yields the kept copy instead, and says so: `kept: true` for the
 *   caller, and {@link takeKeptReads} for the reload's one log line per file.
 * - With no kept copy (a file first named after the drop), or any other error
 *   (ENOENT, EISDIR, ...), the fs error is thrown with its `code` and `path`.
 *
 * A secret is never logged; errors name the path only.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync, statSync, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { L4lbError } from '../errors.js';
import type { Model } from './model.js';

/** Larger than any key, certificate or CA bundle (the system bundle is ~200 KB); stops a mistyped path from filling memory. */
export const MAX_SECRET_BYTES = 4 * 1024 * 1024;

export interface SecretReadOptions {
  /** Refuse (L4LB_SECRET_TOO_LARGE) a file larger than this; default {@link MAX_SECRET_BYTES}. */
  readonly maxBytes?: number;
}

export interface SecretRead {
  readonly data: Buffer;
  /** true: the file could not be read (EACCES/EPERM); `data` is the copy read while root. */
  readonly kept: boolean;
  /** The file's status (owner, mode), from the open file; null when kept and not even stat() is allowed. */
  readonly stats: Stats | null;
}

/** Not a regular file, or too large: the path is named, the content never. */
export class SecretFileError extends L4lbError {
  readonly path: string;
  constructor(code: 'L4LB_SECRET_NOT_FILE' | 'L4LB_SECRET_TOO_LARGE', path: string, message: string) {
    super(code, message);
    this.path = path;
  }
}

/**
 * Contents a worker thread was given by the main thread, by path: a worker
 * never reads a secret file itself (it may start after the privilege drop,
 * when a root-only key could no longer be read), it serves what the main
 * thread read.
 */
const given = new Map<string, Buffer>();

/** In a worker thread: serve these contents for these paths (replacing what was given before). */
export function useGivenSecrets(entries: ReadonlyArray<readonly [string, Uint8Array]>): void {
  given.clear();
  for (const [path, data] of entries) given.set(path, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

/** Copies read while root, by path as written in the configuration. */
const keptCopies = new Map<string, Buffer>();
/** Paths served from a kept copy since the last takeKeptReads(). */
const keptReads = new Set<string>();

/** Root reads whatever it is asked to: that is the copy worth keeping for after the drop. */
function privileged(): boolean {
  return process.geteuid?.() === 0;
}

function refused(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'EACCES' || code === 'EPERM';
}

/** O_NONBLOCK: opening a FIFO named by mistake must not hang the load; regular files ignore it. */
const OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NONBLOCK;

function checkStats(path: string, st: Stats, maxBytes: number): void {
  if (!st.isFile()) throw new SecretFileError('L4LB_SECRET_NOT_FILE', path, `${path} is not a regular file`);
  if (st.size > maxBytes) throw new SecretFileError('L4LB_SECRET_TOO_LARGE', path, `${path} is larger than ${maxBytes} bytes`);
}

/**
 * The kept copy is l4lb's own and never handed out: callers zero key bytes
 * after use, which would otherwise wipe the copy a later reload needs.
 */
function fresh(path: string, data: Buffer, stats: Stats): SecretRead {
  if (privileged()) keptCopies.set(path, Buffer.from(data));
  return { data, kept: false, stats };
}

function keptOr(path: string, err: unknown, statOf: () => Stats | null): SecretRead {
  const copy = keptCopies.get(path);
  if (copy === undefined || !refused(err)) throw err;
  keptReads.add(path);
  return { data: Buffer.from(copy), kept: true, stats: statOf() };
}

/** Reads a secret file, or its kept copy when the process may no longer read it (see the file's header). */
export async function readSecret(path: string, options: SecretReadOptions = {}): Promise<SecretRead> {
  const g = given.get(path);
  if (g !== undefined) return { data: Buffer.from(g), kept: false, stats: null };
  const maxBytes = options.maxBytes ?? MAX_SECRET_BYTES;
  let handle;
  try {
    handle = await open(path, OPEN_FLAGS);
  } catch (err) {
    // stat() needs only the directories' search permission: often still allowed.
    const st = keptCopies.has(path) ? await stat(path).catch(() => null) : null;
    return keptOr(path, err, () => st);
  }
  try {
    const st = await handle.stat();
    checkStats(path, st, maxBytes);
    return fresh(path, await handle.readFile(), st);
  } finally {
    await handle.close();
  }
}

/** The synchronous form of {@link readSecret}, for code that cannot wait. */
export function readSecretSync(path: string, options: SecretReadOptions = {}): SecretRead {
  const g = given.get(path);
  if (g !== undefined) return { data: Buffer.from(g), kept: false, stats: null };
  const maxBytes = options.maxBytes ?? MAX_SECRET_BYTES;
  let fd: number;
  try {
    fd = openSync(path, OPEN_FLAGS);
  } catch (err) {
    return keptOr(path, err, () => {
      try {
        return statSync(path);
      } catch {
        return null;
      }
    });
  }
  try {
    const st = fstatSync(fd);
    checkStats(path, st, maxBytes);
    return fresh(path, readFileSync(fd), st);
  } finally {
    closeSync(fd);
  }
}

/** Reads a secret file's bytes (or the kept copy). Rejects with the fs error (its `code` and `path` intact) or SecretFileError. */
export async function readSecretFile(path: string, options: SecretReadOptions = {}): Promise<Buffer> {
  return (await readSecret(path, options)).data;
}

/** The synchronous form, for code that cannot wait (throws the fs error). */
export function readSecretFileSync(path: string, options: SecretReadOptions = {}): Buffer {
  return readSecretSync(path, options).data;
}

/**
 * Whether a secret file can be read, without reading it: resolves when the
 * process may open it or holds a kept copy; rejects with the fs error
 * otherwise. open() rather than access(): the same check the read will meet
 * (effective ids, ACLs, security modules).
 */
export async function checkSecretReadable(path: string): Promise<void> {
  try {
    await (await open(path, OPEN_FLAGS)).close();
  } catch (err) {
    if (!(keptCopies.has(path) && refused(err))) throw err;
  }
}

/** Paths served from a kept copy since the last call (each once), and forgets them. */
export function takeKeptReads(): string[] {
  const paths = [...keptReads];
  keptReads.clear();
  return paths;
}

/** Every secret file a configuration names, with its configuration path. */
export function secretFiles(model: Model): Array<{ readonly path: string; readonly file: string }> {
  const out: Array<{ path: string; file: string }> = [];
  if (model.admin?.tokenFile) out.push({ path: 'admin.token_file', file: model.admin.tokenFile });
  for (const [i, l] of model.listeners.entries()) {
    const t = l.tls;
    if (t === null) continue;
    for (const [j, c] of t.certs.entries()) {
      out.push({ path: `listeners[${i}].tls.certs[${j}].cert`, file: c.cert });
      out.push({ path: `listeners[${i}].tls.certs[${j}].key`, file: c.key });
    }
    if (t.clientCa !== null) out.push({ path: `listeners[${i}].tls.client_ca`, file: t.clientCa });
  }
  for (const [i, p] of model.pools.entries()) {
    const pw = p.health.redis?.passwordFile;
    if (pw != null) out.push({ path: `pools[${i}].health.redis.password_file`, file: pw });
    const t = p.tls;
    if (t === null) continue;
    if (t.ca !== null) out.push({ path: `pools[${i}].tls.ca`, file: t.ca });
    if (t.cert !== null) out.push({ path: `pools[${i}].tls.cert`, file: t.cert });
    if (t.key !== null) out.push({ path: `pools[${i}].tls.key`, file: t.key });
  }
  return out;
}
