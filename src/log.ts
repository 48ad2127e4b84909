/** The root logger: pino JSON to stdout (journald-friendly). One root, child loggers below it. */
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config/model.js';

export type { Logger };

/** Asynchronous stdout: the accept path must not block on a slow terminal or journald. */
export function createLogger(level: LogLevel = 'info'): { logger: Logger; flush: () => void } {
  const destination = pino.destination({ dest: 1, sync: false });
  const logger = pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  return {
    logger,
    flush: () => {
      try {
        destination.flushSync();
      } catch {
        // stdout already closed: nothing left to flush to
      }
    },
  };
}
