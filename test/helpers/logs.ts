/**
 * Log lines for tests to read back: l4lb logs JSON lines (pino), in this
 * process or a child's stdout, and tests assert on them.
 */
import { Writable } from 'node:stream';
import { loggerOptions } from '../../src/log.js';
import { pino, type Logger, type LevelWithSilent } from 'pino';

/** A log line as parsed; a line that is not JSON is kept as `{ raw }`. */
export type LogLine = Record<string, unknown>;

/**
 * A feed for text that arrives in chunks (a child's stdout, a logger's
 * writes): each complete line is parsed and pushed onto `lines`; a partial
 * line waits for its end.
 */
export function jsonLines(lines: LogLine[]): (chunk: Buffer | string) => void {
  let partial = '';
  return (chunk) => {
    partial += chunk.toString();
    let i;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      if (line === '') continue;
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        lines.push({ raw: line });
      }
    }
  };
}

/** A pino logger at `level` whose lines are collected in `lines`, parsed. */
export function collectingLogger(level: LevelWithSilent = 'debug'): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const feed = jsonLines(lines);
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      feed(chunk);
      cb();
    },
  });
  // Formatted as l4lb's own loggers are (level labels, ISO times): worker threads' lines come that way.
  return { logger: pino({ ...loggerOptions('info'), level }, sink), lines };
}

/** A pino logger that writes nothing anywhere. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' }, new Writable({ write: (_c, _e, cb) => cb() }));
}
