/**
 * A worker thread for the shared per-source table's tests
 * (test/shared-per-source.test.ts): it attaches to the table's buffer as
 * one worker and plays connections against it, then reports what it saw.
 * Workers inherit the test's loader flags, so this file runs as TypeScript.
 *
 * Every job is a bounded loop. Jobs start together: each worker posts
 * 'ready' and sleeps on `control[0]` until the test sets it, so that all
 * threads really contend.
 *
 * The check that counts (hammer): next to the table, each worker keeps an
 * independent count of open connections per client in `truth`, adding one
 * *after* admit() said yes and taking one off *before* release(). So a
 * client's truth count never exceeds what the table holds for it, and any
 * value above max_connections seen in `truth` is a real over-admission.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { LAYOUT, SharedPerSourceTable } from '../../src/protect/shared-per-source.js';
import { seededRandom } from './random.js';

export interface HammerJob {
  readonly kind: 'hammer';
  /** Clients to pick from, and the group (client as the table counts it) of each. */
  readonly sources: readonly string[];
  readonly groups: readonly number[];
  /** Int32Array over this: open connections per group, as the workers saw them. */
  readonly truth: SharedArrayBuffer;
  readonly ops: number;
  readonly seed: number;
  /** Hold what is open at the end (the test terminates this worker) instead of releasing it. */
  readonly keep?: boolean;
}

export interface HammerReport {
  readonly admitted: number;
  readonly refused: number;
  /** Per group: the most open connections the truth count ever reached. */
  readonly maxSeen: number[];
  readonly pending: number;
}

/** Random clients at full speed, each admitted connection released at once: reports what was admitted per group. */
export interface RateJob {
  readonly kind: 'rate';
  readonly sources: readonly string[];
  readonly groups: readonly number[];
  readonly ops: number;
  readonly seed: number;
}

/** Admit each source once and hold what was admitted until told to let go. */
export interface FillJob {
  readonly kind: 'fill';
  readonly sources: readonly string[];
}

/** Take the lock by hand, leave an admit half done, and hang there: a worker that dies in the critical section. */
export interface DieHoldingLockJob {
  readonly kind: 'die-holding-lock';
  readonly sources: readonly string[];
}

export type Job = HammerJob | RateJob | FillJob | DieHoldingLockJob;

export interface WorkerInput {
  readonly table: SharedArrayBuffer;
  readonly worker: number;
  /** [start flag, then per worker: operations done] */
  readonly control: SharedArrayBuffer;
  readonly job: Job;
}

/** Plays `job.ops` random admits and releases; used by worker threads and by the main thread as worker 0. */
export function hammer(table: SharedPerSourceTable, job: HammerJob, progress?: Int32Array): HammerReport {
  const rnd = seededRandom(job.seed);
  const truth = new Int32Array(job.truth);
  const held = new Array<number>(job.sources.length).fill(0);
  const maxSeen = new Array<number>(Math.max(...job.groups) + 1).fill(0);
  let admitted = 0;
  let refused = 0;
  for (let op = 0; op < job.ops; op++) {
    const s = Math.floor(rnd() * job.sources.length);
    const g = job.groups[s]!;
    const ip = job.sources[s]!;
    if (held[s]! > 0 && rnd() < 0.5) {
      Atomics.sub(truth, g, 1);
      table.release(ip);
      held[s]!--;
    } else if (table.admit(ip)) {
      held[s]!++;
      admitted++;
      const open = Atomics.add(truth, g, 1) + 1;
      if (open > maxSeen[g]!) maxSeen[g] = open;
    } else {
      refused++;
    }
    if (progress !== undefined && (op & 255) === 0) Atomics.store(progress, 0, op);
  }
  if (job.keep !== true) {
    for (let s = 0; s < job.sources.length; s++) {
      for (; held[s]! > 0; held[s]!--) {
        Atomics.sub(truth, job.groups[s]!, 1);
        table.release(job.sources[s]!);
      }
    }
  }
  return { admitted, refused, maxSeen, pending: table.pendingReleases };
}

function rate(table: SharedPerSourceTable, job: RateJob): number[] {
  const rnd = seededRandom(job.seed);
  const admitted = new Array<number>(Math.max(...job.groups) + 1).fill(0);
  for (let op = 0; op < job.ops; op++) {
    const s = Math.floor(rnd() * job.sources.length);
    if (table.admit(job.sources[s]!)) {
      admitted[job.groups[s]!]!++;
      table.release(job.sources[s]!);
    }
  }
  return admitted;
}

async function run(input: WorkerInput): Promise<void> {
  const port = parentPort!;
  const table = SharedPerSourceTable.attach(input.table, { worker: input.worker });
  const control = new Int32Array(input.control);
  const progress = new Int32Array(input.control, 4 * (1 + input.worker), 1);
  port.postMessage({ ready: true });
  Atomics.wait(control, 0, 0);
  const job = input.job;
  switch (job.kind) {
    case 'hammer':
      port.postMessage({ done: hammer(table, job, progress) });
      return;
    case 'rate':
      port.postMessage({ done: rate(table, job) });
      return;
    case 'fill': {
      const admitted = job.sources.filter((ip) => table.admit(ip));
      port.postMessage({ admitted });
      await new Promise((resolve) => port.once('message', resolve));
      for (const ip of admitted) table.release(ip);
      port.postMessage({ released: admitted.length, pending: table.pendingReleases });
      return;
    }
    case 'die-holding-lock': {
      for (const ip of job.sources) table.admit(ip);
      const i32 = new Int32Array(input.table);
      // The lock, taken as admit() takes it, then the first half of an admit of entry 0: this worker's column counts
      // one more connection, the entry's open count does not yet.
      while (Atomics.compareExchange(i32, LAYOUT.lock, 0, LAYOUT.ownerOf(input.worker)) !== 0);
      const cols = new Int32Array(input.table, LAYOUT.columnsByteOffset(table.maxSources), table.workers * table.maxSources);
      cols[input.worker * table.maxSources] = cols[input.worker * table.maxSources]! + 1;
      port.postMessage({ holding: true });
      // Hang here until terminated (bounded: a minute).
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
      return;
    }
  }
}

if (!isMainThread && (workerData as { table?: unknown } | null)?.table instanceof SharedArrayBuffer) {
  void run(workerData as WorkerInput);
}
