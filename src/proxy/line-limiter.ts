/**
 * A listener's bound on connection lines for connections that never reached
 * a server (rejections, failed handshakes, bad PROXY headers, local errors):
 * a flood of garbage must not fill the disk or push a `server down` line out
 * of journald. Up to `perSecond` lines a second pass (bursts of one second's
 * worth); past that, lines are counted instead, and once a second one line
 * says how many were suppressed.
 */
import type { Logger } from '../log.js';

/** Lines per second per listener before suppression; HAProxy-like log volume for a flood. */
export const DEFAULT_LINES_PER_SECOND = 10;
const REPORT_EVERY_MS = 1_000;

export class LineLimiter {
  readonly #perSecond: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;
  #suppressed = 0;
  #timer: NodeJS.Timeout | undefined;
  #logger: Logger | null = null;
  #listener = '';

  constructor(perSecond = DEFAULT_LINES_PER_SECOND, now: () => number = () => performance.now()) {
    this.#perSecond = perSecond;
    this.#now = now;
    this.#tokens = perSecond;
    this.#at = now();
  }

  /** May one more line be written now? If not, it is counted for the next "suppressed" line. */
  allow(logger: Logger, listener: string): boolean {
    const now = this.#now();
    this.#tokens = Math.min(this.#perSecond, this.#tokens + ((now - this.#at) / 1_000) * this.#perSecond);
    this.#at = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return true;
    }
    this.#suppressed++;
    this.#logger = logger;
    this.#listener = listener;
    this.#timer ??= setInterval(this.#report, REPORT_EVERY_MS);
    return false;
  }

  /** Lines suppressed and not yet reported. */
  get suppressed(): number {
    return this.#suppressed;
  }

  #report = (): void => {
    if (this.#suppressed === 0) {
      // A quiet second: nothing to say, and no timer left running.
      this.close();
      return;
    }
    this.#logger?.info({ listener: this.#listener, suppressed: this.#suppressed }, 'connection lines suppressed');
    this.#suppressed = 0;
  };

  /** Report what is pending and stop the timer. Idempotent. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#suppressed > 0) this.#report();
  }
}
