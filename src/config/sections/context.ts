/**
 * What every section's normaliser shares while one configuration is checked:
 * the problems and warnings found, and the background work (name lookups,
 * file reads) that must finish before the model is complete. Sections read
 * values the schema may have rejected: every reader here falls back quietly,
 * because the schema has already reported the value.
 */
import { parseCidr } from '../../net/cidr.js';
import { userName } from '../../runtime/privileges.js';
import { createResolver, parseAddress, type Resolver } from '../address.js';
import { parseDuration } from '../duration.js';
import type { Endpoint } from '../model.js';
import { Problems } from '../problems.js';
import { checkSecretReadable } from '../secret-file.js';
import { show } from '../show.js';

/** A parsed YAML or JSON object. */
export type Obj = Record<string, unknown>;

/** A mutable draft: addresses are filled in once resolved. */
export interface Draft<T> {
  value: T;
  path: string;
}

/** A section's TLS settings, checked against their files once those are known readable. */
export interface TlsDraft<T> {
  readonly path: string;
  readonly model: T;
}

/** The endpoint of an address not (yet) resolved. */
export const UNRESOLVED: Endpoint = Object.freeze({ host: '', port: 0, text: '' });

/** `v` when it is an object (not a list), else undefined. */
export function asObject(v: unknown): Obj | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined;
}

/** `v` when it is a string, else undefined. */
export function asString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** `v` when it is one of `allowed`, else `fallback`. */
export function oneOf<T extends string>(v: unknown, allowed: readonly T[], fallback: T): T {
  return allowed.includes(v as T) ? (v as T) : fallback;
}

/** `v` when it is a safe integer, else `fallback`. */
export function intOr(v: unknown, fallback: number): number {
  return Number.isSafeInteger(v) ? (v as number) : fallback;
}

/** `v` when it is true or false, else `fallback`. */
export function boolOr(v: unknown, fallback: boolean): boolean {
  return typeof v === 'boolean' ? v : fallback;
}

/** EACCES/EPERM name the user l4lb reads as (after a privilege drop, files first named in a reload must be readable by it). */
export function unreadableReason(err: NodeJS.ErrnoException): string {
  const euid = process.geteuid?.();
  if ((err.code === 'EACCES' || err.code === 'EPERM') && euid !== undefined && euid !== 0) {
    return `${err.code} (not readable by user ${userName(euid)}, which l4lb runs as)`;
  }
  return err.code ?? err.message;
}

/** One check of one configuration: shared by every section's normaliser. */
export class Check {
  readonly problems = new Problems();
  /** Operator-visible doubts that do not stop the configuration (expired certificates, verify: false). */
  readonly warnings: string[] = [];
  readonly #resolve: Resolver = createResolver();
  readonly #waits: Promise<void>[] = [];

  add(path: string, message: string): void {
    this.problems.add(path, message);
  }

  /** Work that must finish (and report its problems) before the model is complete. */
  wait(work: Promise<void>): void {
    this.#waits.push(work);
  }

  /** Every name lookup and file check started so far has finished. */
  async settled(): Promise<void> {
    await Promise.all(this.#waits);
  }

  /** Parses an address and resolves it in the background; `set` receives the endpoint. */
  address(path: string, value: unknown, bind: boolean, set: (ep: Endpoint) => void): void {
    if (value === undefined) return;
    const parsed = parseAddress(value, { allowPortZero: bind });
    if (typeof parsed === 'string') return this.add(path, parsed);
    this.wait(this.#resolve(parsed).then((ep) => (typeof ep === 'string' ? this.add(path, ep) : set(ep))));
  }

  /** A timeout: a duration longer than 0. */
  timeout(path: string, value: unknown, fallback: number): number {
    if (value === undefined) return fallback;
    const ms = parseDuration(value);
    if (typeof ms === 'string') this.add(path, ms);
    else if (ms === 0) this.add(path, `expected a timeout longer than 0ms, got ${show(value)}`);
    return typeof ms === 'number' ? ms : fallback;
  }

  /** A duration where 0 is allowed (it means "off"). */
  duration(path: string, value: unknown, fallback: number): number {
    if (value === undefined) return fallback;
    const ms = parseDuration(value);
    if (typeof ms === 'string') this.add(path, ms);
    return typeof ms === 'number' ? ms : fallback;
  }

  /** A CIDR list; each bad entry is a problem at its own index. */
  cidrs(path: string, value: unknown): string[] {
    if (!Array.isArray(value)) return [];
    const out: string[] = [];
    for (const [i, item] of value.entries()) {
      if (typeof item !== 'string') continue; // the schema has reported it
      const parsed = parseCidr(item);
      if (typeof parsed === 'string') this.add(`${path}[${i}]`, parsed);
      else out.push(parsed.text);
    }
    return out;
  }

  /** A file the process must be able to read (certificates, keys, CAs), or hold the copy read before a privilege drop. */
  readable(path: string, value: unknown): string | null {
    if (typeof value !== 'string' || value === '') return null;
    this.wait(
      checkSecretReadable(value).catch((err: NodeJS.ErrnoException) =>
        this.add(path, `cannot read ${value}: ${err.code === 'ENOENT' ? 'no such file' : unreadableReason(err)}`),
      ),
    );
    return value;
  }
}
