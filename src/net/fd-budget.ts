/**
 * The process's file descriptors as a budget, so that running out of them
 * is l4lb's own visible decision rather than an accident.
 *
 * Why: when accept() fails with EMFILE, libuv closes a spare descriptor,
 * accepts the waiting connections and closes them again, without telling
 * Node: clients are dropped with no log line and no metric, and Node offers
 * no way to stop polling a listening socket (HAProxy's answer, "pause
 * accepting"). And a backend connect that fails with EMFILE looks, to
 * anyone who does not check the code, like a dead server. So l4lb keeps a
 * reserve: a new client is accepted only while its own descriptor and its
 * backend's fit above the reserve; below it, the client is refused at once
 * as `local_error` (counted and logged), and sessions already admitted and
 * health probes still find descriptors for their connects.
 *
 * The count is exact for what l4lb opens per connection (client, backend,
 * probe) and measured from /proc/self/fd for everything else (listeners,
 * the log, the admin server, timers), re-measured only when the budget
 * runs low, at most every {@link MEASURE_EVERY_MS}. Where the soft limit
 * cannot be read (not Linux, or unlimited) the budget never refuses.
 * Descriptors are the process's, whatever thread opens them: with several
 * serving threads the count of those held lives in shared memory (`share()`).
 */
import { readFileSync, readdirSync } from 'node:fs';

/** Re-count the open descriptors at most this often (a readdir of /proc, only when the budget runs low). */
const MEASURE_EVERY_MS = 250;

export interface FdBudgetOptions {
  /** The soft RLIMIT_NOFILE; Infinity: never refuse. */
  readonly limit: number;
  /** Descriptors open right now (all of them); called when the budget runs low. */
  readonly count: () => number;
  readonly now?: () => number;
}

/** What a caller needs the descriptor for: new clients give way first. */
export type FdUse = 'accept' | 'connect';

export class FdBudget {
  readonly #limit: number;
  /** Kept free: new clients are refused below it; connects of admitted sessions and probes may use half of it. */
  readonly reserve: number;
  readonly #count: () => number;
  readonly #now: () => number;
  /** Descriptors l4lb holds for connections and probes, by its own count: one cell, shared by every thread once share()d. */
  #cells: Int32Array<ArrayBufferLike> = new Int32Array(1);
  #cell = 0;
  /** Everything else, from the last measurement: open descriptors minus #held then. */
  #other = -1;
  #measuredAt = -Infinity;

  constructor(options: FdBudgetOptions) {
    this.#limit = options.limit;
    this.#count = options.count;
    this.#now = options.now ?? (() => performance.now());
    // 1/32 of the limit, at least 8 and at most 128: room for the admin
    // server, DNS, the log and a burst of probes, whatever the limit.
    this.reserve = Number.isFinite(this.#limit) ? Math.min(128, Math.max(8, Math.floor(this.#limit / 32))) : 0;
  }

  /** The soft limit this budget works against (Infinity when unknown). */
  get limit(): number {
    return this.#limit;
  }

  /** Descriptors l4lb holds for connections and probes now (every thread's). */
  get held(): number {
    return Atomics.load(this.#cells, this.#cell);
  }

  /**
   * Count in `cells[index]` from now on: the process-wide cell every serving
   * thread shares. The main thread brings what it holds already.
   */
  share(cells: Int32Array<ArrayBufferLike>, index: number, carry: boolean): void {
    if (cells === this.#cells && index === this.#cell) return;
    const held = this.held;
    this.#cells = cells;
    this.#cell = index;
    if (carry && held !== 0) Atomics.add(cells, index, held);
  }

  /**
   * Take one descriptor, if that leaves the reserve intact: for `accept`,
   * room for the client and its backend above the whole reserve; for
   * `connect`, above half of it. Returns false (and takes nothing) otherwise.
   */
  take(use: FdUse): boolean {
    if (this.#limit === Infinity) {
      Atomics.add(this.#cells, this.#cell, 1);
      return true;
    }
    const keep = use === 'accept' ? this.reserve + 1 : this.reserve >> 1;
    if (this.#free() - 1 < keep) {
      // Low: look again (things may have closed since), then decide.
      this.#measure(false);
      if (this.#free() - 1 < keep) return false;
    }
    Atomics.add(this.#cells, this.#cell, 1);
    return true;
  }

  /** Give back `n` descriptors taken with {@link take} (their sockets are closing). */
  give(n = 1): void {
    if (n !== 0) Atomics.sub(this.#cells, this.#cell, n);
  }

  /** The kernel said EMFILE/ENFILE although the budget allowed it: measure at the next take. */
  exhausted(): void {
    this.#measuredAt = -Infinity;
  }

  #free(): number {
    if (this.#other < 0) this.#measure(true);
    return this.#limit - this.#other - this.held;
  }

  #measure(force: boolean): void {
    const now = this.#now();
    if (!force && now - this.#measuredAt < MEASURE_EVERY_MS) return;
    this.#measuredAt = now;
    let open: number;
    try {
      open = this.#count();
    } catch {
      return; // keep the last figure
    }
    this.#other = Math.max(0, open - this.held);
  }
}

/** The soft limit on open files from /proc/self/limits; Infinity when unknown or unlimited. */
export function softFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m === null || m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    return Infinity;
  }
}

/** Open descriptors of this process (the readdir's own descriptor excluded). */
function countOpenFds(): number {
  return readdirSync('/proc/self/fd').length - 1;
}

/** The process's budget: descriptors are per process, shared by every listener and probe. */
export const processFds = new FdBudget({ limit: softFileLimit(), count: countOpenFds });
