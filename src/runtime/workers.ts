/**
 * The main thread's side of the worker threads: it starts them (threads 1
 * to N-1; the main thread is thread 0 and serves too), takes them through
 * reloads in two steps with its own data plane, drains and stops them, and
 * replaces one that dies: its connections are lost, its share of the shared
 * counts is taken back, and a new thread starts from the current plan
 * (logged, and counted in l4lb_worker_restarts_total).
 */
import { Worker } from 'node:worker_threads';
import type { LogLevel } from '../config/model.js';
import { ConfigError, L4lbError, type ErrorCode } from '../errors.js';
import { writeLines, type Logger } from '../log.js';
import { C_WORKER_RESTARTS, type SharedMemory } from '../shared/memory.js';
import type { Plan } from './plan.js';
import type { FromThread, ThreadData, ThreadError, ToThread } from './thread-messages.js';

/** Node flags a worker thread takes over from the process (each in its `--flag=value` form). */
const WORKER_FLAGS = /^--(import|require|loader|experimental-loader|enable-source-maps|conditions|no-warnings|no-deprecation)(=|$)/;

/** A worker that does not answer a step within this long has failed it. */
const STEP_TIMEOUT_MS = 30_000;
/** Replacements of a thread that keeps dying at start are spaced out by this, at least. */
const RESTART_BACKOFF_MS = 1_000;

export interface WorkersEvents {
  /** A thread died: give back what it held outside the shared counts (per-source tables) before another takes its place. */
  threadGone(thread: number): Promise<void>;
  /** A client connect failed in a worker: health hears of it (the worker counted it). */
  connectFailure(pool: string, server: string, reason: string): void;
}

interface Waiter {
  readonly kind: FromThread['kind'];
  resolve(): void;
  reject(err: Error): void;
}

/** One worker thread and what the main thread waits to hear from it. */
class Thread {
  readonly index: number;
  readonly worker: Worker;
  readonly waiters: Waiter[] = [];
  exited = false;

  constructor(index: number, worker: Worker) {
    this.index = index;
    this.worker = worker;
  }

  send(message: ToThread): void {
    if (!this.exited) this.worker.postMessage(message);
  }

  /** Resolves when the thread says `kind`; rejects on its failure, its exit, or after `timeoutMs` (0: no limit). */
  expect(kind: FromThread['kind'], timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = timeoutMs > 0 ? setTimeout(() => waiter.reject(new Error(`worker ${this.index} did not answer "${kind}" within ${timeoutMs} ms`)), timeoutMs) : undefined;
      const waiter: Waiter = {
        kind,
        resolve: () => {
          clearTimeout(timer);
          this.#remove(waiter);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          this.#remove(waiter);
          reject(err);
        },
      };
      if (this.exited) return waiter.reject(new Error(`worker ${this.index} has exited`));
      this.waiters.push(waiter);
    });
  }

  #remove(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
  }
}

/** Rebuild a coded error from what crossed the thread boundary. */
function errorFrom(e: ThreadError, thread: number): Error {
  if (e.problems !== undefined) return new ConfigError(e.problems);
  if (e.code !== undefined) return new L4lbError(e.code as ErrorCode, `worker ${thread}: ${e.message}`);
  return new Error(`worker ${thread}: ${e.message}`);
}

export class Workers {
  readonly #memory: SharedMemory;
  readonly #logger: Logger;
  readonly #events: WorkersEvents;
  readonly #threads = new Map<number, Thread>();
  #plan: Plan | undefined;
  #level: LogLevel;
  /** Set once stopping: a thread that exits then is not replaced. */
  #stopping = false;
  readonly #lastStart = new Map<number, number>();
  readonly #restartTimers = new Set<NodeJS.Timeout>();

  constructor(memory: SharedMemory, logger: Logger, level: LogLevel, events: WorkersEvents) {
    this.#memory = memory;
    this.#logger = logger;
    this.#level = level;
    this.#events = events;
  }

  /** Worker threads that serve (the main thread not counted). */
  get count(): number {
    return this.#memory.threads - 1;
  }

  /** The worker thread serving as thread `index` (1 and up), if it is running: for tests and diagnostics. */
  thread(index: number): Worker | undefined {
    return this.#threads.get(index)?.worker;
  }

  /** Start threads 1..N-1 on `plan`; all start or none stays (rejects with the first failure). */
  async start(plan: Plan): Promise<void> {
    this.#plan = plan;
    const starts: Promise<void>[] = [];
    for (let i = 1; i < this.#memory.threads; i++) starts.push(this.#spawn(i));
    const results = await Promise.allSettled(starts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      await this.destroy();
      throw failed.reason;
    }
  }

  /** Reload, step one in every thread; rejects (after telling all to abort) if one fails. */
  async prepare(plan: Plan): Promise<void> {
    const threads = [...this.#threads.values()];
    const results = await Promise.allSettled(threads.map((t) => this.#step(t, { kind: 'prepare', plan }, 'prepared')));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      for (const t of threads) t.send({ kind: 'abort' });
      throw failed.reason;
    }
  }

  /** Reload, step two: every thread takes the prepared plan. */
  async commit(plan: Plan): Promise<void> {
    this.#plan = plan;
    await Promise.allSettled([...this.#threads.values()].map((t) => this.#step(t, { kind: 'commit' }, 'committed')));
  }

  /** New log level for the threads' loggers (they take it at the next commit; this is for replacements). */
  set level(level: LogLevel) {
    this.#level = level;
  }

  /** Every thread stops accepting; resolves once all their connections have ended. */
  async drain(): Promise<void> {
    this.#stopping = true;
    await Promise.allSettled([...this.#threads.values()].map((t) => this.#step(t, { kind: 'drain' }, 'drained', 0)));
  }

  /** Every thread ends its connections now. */
  shutdown(): void {
    for (const t of this.#threads.values()) t.send({ kind: 'shutdown' });
  }

  /** Stop every thread (their connections end) and wait for them to exit. Idempotent. */
  async destroy(): Promise<void> {
    this.#stopping = true;
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    await Promise.all(
      [...this.#threads.values()].map(async (t) => {
        await this.#step(t, { kind: 'destroy' }, 'destroyed', 5_000).catch(() => undefined);
        await t.worker.terminate();
      }),
    );
    this.#threads.clear();
  }

  /** Send `message` and wait for `answer` (timeout 0: as long as it takes; the thread's exit ends it too). */
  #step(t: Thread, message: ToThread, answer: FromThread['kind'], timeoutMs = STEP_TIMEOUT_MS): Promise<void> {
    const done = t.expect(answer, timeoutMs);
    t.send(message);
    return done;
  }

  #spawn(index: number): Promise<void> {
    const data: ThreadData = { handles: this.#memory.handles(), thread: index, level: this.#level };
    // Node runs the thread on the file next to this one (src/ under the tests' TypeScript loader, dist/ otherwise).
    const worker = new Worker(new URL(`./serving-thread${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url), {
      workerData: data,
      // The process's module loaders and source maps (the tests' TypeScript hooks). Not the
      // rest: V8 flags are the process's (a worker refuses them; their effect is shared
      // anyway), and others only make sense for a main script.
      execArgv: process.execArgv.filter((a) => WORKER_FLAGS.test(a)),
    });
    const t = new Thread(index, worker);
    this.#threads.set(index, t);
    this.#lastStart.set(index, Date.now());
    worker.on('message', (m: FromThread) => this.#onMessage(t, m));
    worker.on('error', (err) => {
      this.#logger.error({ worker: index, err: err.message }, 'worker thread failed');
    });
    worker.on('exit', (code) => this.#onExit(t, code));
    return this.#step(t, { kind: 'start', plan: this.#plan! }, 'started');
  }

  #onMessage(t: Thread, m: FromThread): void {
    switch (m.kind) {
      case 'log':
        writeLines(this.#logger, m.text);
        return;
      case 'connect-failure':
        this.#events.connectFailure(m.pool, m.server, m.reason);
        return;
      case 'failed': {
        const err = errorFrom(m.error, t.index);
        // The oldest waiter is the step that failed.
        const waiter = t.waiters[0];
        if (waiter !== undefined) waiter.reject(err);
        else this.#logger.error({ worker: t.index, err: err.message }, 'worker thread error');
        return;
      }
      default: {
        const waiter = t.waiters.find((w) => w.kind === m.kind);
        waiter?.resolve();
      }
    }
  }

  /** A thread exited: expected when stopping; otherwise it died, and another takes its place. */
  #onExit(t: Thread, code: number): void {
    t.exited = true;
    for (const w of [...t.waiters]) w.reject(new Error(`worker ${t.index} exited (code ${code})`));
    if (this.#threads.get(t.index) === t) this.#threads.delete(t.index);
    if (this.#stopping) return;
    // Its connections are gone: what it held must not count any more.
    this.#memory.releaseThread(t.index);
    Atomics.add(this.#memory.control, C_WORKER_RESTARTS, 1);
    const sinceStart = Date.now() - (this.#lastStart.get(t.index) ?? 0);
    const delay = Math.max(0, RESTART_BACKOFF_MS - sinceStart);
    this.#logger.error({ worker: t.index, code, restart_in_ms: delay }, 'worker thread died; its connections are lost, starting another');
    const timer = setTimeout(async () => {
      this.#restartTimers.delete(timer);
      await this.#events.threadGone(t.index).catch((err: unknown) => {
        this.#logger.error({ worker: t.index, err: err instanceof Error ? err.message : String(err) }, 'taking back what a dead worker thread held failed');
      });
      if (this.#stopping) return;
      this.#spawn(t.index).catch((err: unknown) => {
        this.#logger.error({ worker: t.index, err: err instanceof Error ? err.message : String(err) }, 'replacement worker thread failed to start');
      });
    }, delay);
    this.#restartTimers.add(timer);
  }
}
