/**
 * The clock of the shared per-source table. The buckets of all threads run
 * on one clock, a monotonic one (performance.now() shifted once per thread
 * onto the process-wide monotonic clock): the wall clock can step back, and
 * a bucket whose last refill lies in the future would not refill until the
 * clock caught up.
 */

/**
 * A monotonic clock in milliseconds that every thread of the process reads
 * alike: performance.now() counts from each thread's own start, so it is
 * shifted once onto the process-wide monotonic clock (the best of a few
 * readings: the first hrtime call can be slow).
 */
const CLOCK_OFFSET = (() => {
  let best = Infinity;
  let offset = 0;
  for (let i = 0; i < 16; i++) {
    const a = performance.now();
    const h = Number(process.hrtime.bigint()) / 1e6;
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offset = h - (a + b) / 2;
    }
  }
  return offset;
})();

/** Milliseconds on the clock all threads share (see CLOCK_OFFSET). */
export function sharedClock(): number {
  return performance.now() + CLOCK_OFFSET;
}
