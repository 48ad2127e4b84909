/** The root logger: pino JSON to stdout (journald-friendly). One root, child loggers below it. */
import { pino, type Logger, type LoggerOptions } from 'pino';
import type { LogLevel } from './config/model.js';

export type { Logger };

/** Longest wait for buffered log lines at exit. */
const FINAL_FLUSH_MS = 1_000;
/**
 * Lines are written in batches of about this many bytes (one write syscall
 * for ~15 access lines instead of one each), and at least this often.
 */
const BATCH_BYTES = 4_096;
const BATCH_MAX_DELAY_MS = 250;
/**
 * Most bytes of log lines held while stdout does not take them (journald
 * stalled, a terminal paused): beyond this, new lines are dropped and
 * counted (l4lb_log_lines_dropped_total) rather than growing memory
 * without bound. 8 MiB is some 40,000 access lines.
 */
export const MAX_BUFFERED_LOG_BYTES = 8 * 1024 * 1024;

/** Lines dropped because stdout did not keep up, since the process started. */
let droppedLines = 0;

/** Lines the root logger dropped because its buffer was full (for the metric). */
export function droppedLogLines(): number {
  return droppedLines;
}

export interface RootLogger {
  readonly logger: Logger;
  /** Write out everything buffered, in order, and close stdout; for the moment before exit. */
  close(): Promise<void>;
  /** Last resort on a fatal error: write what is queued synchronously. */
  flushSync(): void;
}

/** How every l4lb logger formats its lines (the root one, and the worker threads', whose lines the root one writes). */
export function loggerOptions(level: LogLevel): LoggerOptions {
  return {
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
}

/**
 * Write whole lines (a worker thread's batch) to `logger`'s destination as
 * they are: one writer for stdout, so lines from every thread stay whole.
 */
export function writeLines(logger: Logger, text: string): void {
  const stream = (logger as unknown as Record<symbol, { write(s: string): unknown } | undefined>)[pino.symbols.streamSym];
  stream?.write(text);
}

/** Asynchronous stdout: the accept path must not block on a slow terminal or journald. */
export function createLogger(level: LogLevel = 'info', dest: number | string = 1): RootLogger {
  const destination = pino.destination({ dest, sync: false, minLength: BATCH_BYTES, maxLength: MAX_BUFFERED_LOG_BYTES });
  destination.on('drop', () => droppedLines++);
  // A quiet process must not hold its last lines back indefinitely. The
  // timer is unref'd because logging alone must not keep the process alive;
  // close() clears it.
  const flusher = setInterval(() => destination.flush(), BATCH_MAX_DELAY_MS);
  flusher.unref();
  const logger = pino(loggerOptions(level), destination);
  return {
    logger,
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(flusher);
        const done = (): void => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(done, FINAL_FLUSH_MS);
        // Not end() or flush(cb): both fsync the descriptor. Stdout needs no
        // fsync, and on a log file of a busy disk one took over a second, which
        // the exit waited for (Node joins its I/O threads before exiting). With
        // no minimum length, a write in flight goes on until nothing is left and
        // then emits 'drain'; writing '' starts one when none is in flight.
        (destination as unknown as { minLength: number }).minLength = 0;
        destination.once('drain', done);
        destination.once('error', done);
        try {
          destination.write('');
        } catch {
          done(); // already destroyed (stdout closed): nothing to wait for
        }
      }),
    flushSync: () => {
      try {
        destination.flushSync();
      } catch {
        // stdout already closed: nothing left to flush to
      }
    },
  };
}
