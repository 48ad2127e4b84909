/**
 * Durations in the configuration: `500ms`, `3s`, `1.5m`, `1h`, or integer
 * milliseconds. Everything is converted to whole milliseconds.
 */

import { show } from './show.js';

/**
 * The string form, shared with the JSON Schema so editors flag the same
 * strings that {@link parseDuration} rejects.
 */
export const DURATION_PATTERN = '^([0-9]+)(\\.[0-9]+)?(ms|s|m|h)$';

/**
 * The longest accepted duration: Node's timers hold at most a signed 32-bit
 * millisecond count and fire at once (after a warning) beyond it, so a larger
 * value would silently become a 1ms timeout.
 */
export const MAX_DURATION_MS = 2_147_483_647;

const UNIT_MS = { ms: 1n, s: 1_000n, m: 60_000n, h: 3_600_000n } as const;
const SYNTAX = new RegExp(DURATION_PATTERN);
const EXPECTED = 'expected a duration like "500ms", "3s", "1h" or integer milliseconds';

/**
 * Parses a duration as written in a configuration file.
 *
 * @param value - a string like `"3s"` or `"1.5m"`, or a non-negative integer of milliseconds.
 * @returns whole milliseconds, or (a string) the message explaining why `value` is not a duration.
 */
export function parseDuration(value: unknown): number | string {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0) return `${EXPECTED}, got ${show(value)}`;
    return value > MAX_DURATION_MS ? tooLong(value) : value;
  }
  if (typeof value !== 'string') return `${EXPECTED}, got ${show(value)}`;
  // Length cap first: BigInt on a megabyte of digits is slow and pointless.
  const m = value.length <= 40 ? SYNTAX.exec(value) : null;
  if (!m) return `${EXPECTED}, got ${show(value)}`;
  const [, whole = '', dotted = '', unit = ''] = m;
  const fraction = dotted.slice(1);
  // Exact decimal arithmetic: 1.001s must be 1001ms, not 1000.9999999999999.
  const scale = 10n ** BigInt(fraction.length);
  const scaled = (BigInt(whole) * scale + BigInt(fraction || '0')) * UNIT_MS[unit as keyof typeof UNIT_MS];
  if (scaled % scale !== 0n) return `a duration must be a whole number of milliseconds, got ${show(value)}`;
  const ms = scaled / scale;
  return ms > BigInt(MAX_DURATION_MS) ? tooLong(value) : Number(ms);
}

function tooLong(value: unknown): string {
  return `a duration can be at most ${MAX_DURATION_MS}ms (about 24.8 days), got ${show(value)}`;
}

/**
 * Writes milliseconds in the largest unit that represents them exactly
 * (`3600000` → `"1h"`, `90000` → `"90s"`, `1500` → `"1500ms"`, `0` → `"0ms"`):
 * the one spelling for schema descriptions, log reasons and the reload
 * preview, and one {@link parseDuration} reads back to the same value.
 */
export function formatDuration(ms: number): string {
  for (const unit of ['h', 'm', 's'] as const) {
    const size = Number(UNIT_MS[unit]);
    if (ms > 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
