/**
 * A server's health as a small state machine: `fall` consecutive failures
 * mark it down, `rise` consecutive successes mark it up. Only flips are
 * reported, so only flips are logged.
 */

export interface LastCheck {
  readonly ok: boolean;
  readonly reason: string;
  readonly latencyMs: number;
  /** Wall-clock time of the check (ms since epoch). */
  readonly at: number;
  /** `active` probe or `passive` (a real client connect that failed). */
  readonly source: 'active' | 'passive';
}

export class HealthState {
  #rise: number;
  #fall: number;
  /** Servers start up, as in HAProxy. */
  #up = true;
  #successes = 0;
  #failures = 0;
  #last: LastCheck | null = null;

  constructor(rise: number, fall: number) {
    this.#rise = rise;
    this.#fall = fall;
  }

  /**
   * Take the state another thread decided (a serving thread follows the
   * main thread's probes; it never records checks of its own).
   */
  follow(up: boolean): void {
    this.#up = up;
  }

  /** New thresholds (after a reload); counts in progress are kept. */
  setThresholds(rise: number, fall: number): void {
    this.#rise = rise;
    this.#fall = fall;
  }

  get up(): boolean {
    return this.#up;
  }

  /** Failures in a row while still up (counting toward `fall`). */
  get failing(): boolean {
    return this.#up && this.#failures > 0;
  }

  get last(): LastCheck | null {
    return this.#last;
  }

  /** Record one check; returns 'up' or 'down' when this check flips the state. */
  record(check: LastCheck): 'up' | 'down' | undefined {
    this.#last = check;
    if (check.ok) {
      this.#failures = 0;
      if (!this.#up && ++this.#successes >= this.#rise) {
        this.#up = true;
        this.#successes = 0;
        return 'up';
      }
    } else {
      this.#successes = 0;
      if (this.#up && ++this.#failures >= this.#fall) {
        this.#up = false;
        this.#failures = 0;
        return 'down';
      }
    }
    return undefined;
  }
}
