/**
 * What the main thread and a worker thread say to each other. Only the
 * control plane: start, reload (two steps), drain, stop; and from a worker
 * its log lines (in batches) and the failed connects health must hear of.
 * Nothing per connection goes through here (shared memory carries the rest).
 */
import type { LogLevel } from '../config/model.js';
import type { SharedHandles } from '../shared/memory.js';
import type { Plan } from './plan.js';

/** What a worker is started with. */
export interface ThreadData {
  readonly handles: SharedHandles;
  /** Its row in shared memory (1 and up; 0 is the main thread). */
  readonly thread: number;
  readonly level: LogLevel;
}

export type ToThread =
  | { readonly kind: 'start'; readonly plan: Plan }
  | { readonly kind: 'prepare'; readonly plan: Plan }
  | { readonly kind: 'commit' }
  | { readonly kind: 'abort' }
  | { readonly kind: 'drain' }
  | { readonly kind: 'shutdown' }
  | { readonly kind: 'destroy' };

/** An error as it crosses threads: enough to rebuild a coded one. */
export interface ThreadError {
  readonly name: string;
  readonly code: string | undefined;
  readonly message: string;
  /** ConfigError's problems, when it was one. */
  readonly problems?: ReadonlyArray<{ readonly path: string; readonly message: string }>;
}

export type FromThread =
  | { readonly kind: 'started' }
  | { readonly kind: 'prepared' }
  | { readonly kind: 'failed'; readonly error: ThreadError }
  | { readonly kind: 'committed' }
  | { readonly kind: 'drained' }
  | { readonly kind: 'destroyed' }
  | { readonly kind: 'log'; readonly text: string }
  | { readonly kind: 'connect-failure'; readonly pool: string; readonly server: string; readonly reason: string };
