/**
 * The problems of one configuration check, each named by its path
 * (`pools[0].servers[2].address`), and the path arithmetic they need.
 */
import type { ConfigProblem } from '../errors.js';
import { show } from './show.js';

/**
 * Collects problems. Values the schema already rejected are not checked
 * again, so one mistake gives one message; the same message for the same
 * path is kept once.
 */
export class Problems {
  readonly list: ConfigProblem[] = [];
  private readonly seen = new Set<string>();
  private readonly rejected = new Set<string>();

  /** A problem found by meaning (not by the schema); dropped when the schema rejected the value or what holds it. */
  add(path: string, message: string): void {
    for (let p: string | undefined = path; p !== undefined; p = parentPath(p)) {
      if (this.rejected.has(p)) return;
    }
    this.push(path, message);
  }

  /** A schema problem; `rejectedPath` is the value it concerns (for a missing key, the key's own path). */
  addSchema(path: string, message: string, rejectedPath: string): void {
    this.rejected.add(rejectedPath);
    this.push(path, message);
  }

  /** Whether a problem was found at `path` itself or below it. */
  has(path: string): boolean {
    return this.list.some((p) => p.path === path || p.path.startsWith(`${path}.`));
  }

  /** Whether a problem was found below `path` (its keys or items named with a dot). */
  hasBelow(path: string): boolean {
    return this.list.some((p) => p.path.startsWith(`${path}.`));
  }

  private push(path: string, message: string): void {
    const key = `${path}\n${message}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.list.push({ path, message });
  }

  /** Grouped by item (indices compared as numbers), otherwise in the order found. */
  sorted(): ConfigProblem[] {
    const key = (p: ConfigProblem) => p.path.replace(/\d+/g, (d) => d.padStart(12, '0'));
    return this.list
      .map((p, i) => ({ p, i, k: key(p) }))
      .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : a.i - b.i))
      .map((x) => x.p);
  }
}

function parentPath(path: string): string | undefined {
  if (path === '') return undefined;
  const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
  return cut <= 0 ? '' : path.slice(0, cut);
}

/** Appends a key to a path, quoting keys that would not read as one word. */
export function joinPath(path: string, key: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) return `${path}[${show(key)}]`;
  return path === '' ? key : `${path}.${key}`;
}

/** A JSON pointer as a path: `/pools/0/servers/2/address` → `pools[0].servers[2].address`. */
export function pointerToPath(pointer: string): string {
  let path = '';
  for (const raw of pointer.split('/').slice(1)) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    // Object keys in instance paths are schema keys, never numbers, so digits are list indices.
    path = /^\d+$/.test(segment) ? `${path}[${segment}]` : joinPath(path, segment);
  }
  return path;
}
