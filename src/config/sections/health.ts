/** `pools[].health`: active probes of every server of a pool. */
import { DEFAULTS } from '../../defaults.js';
import type { HealthModel } from '../model.js';
import { duration, integer, object, type JsonSchema } from '../schema-nodes.js';
import { show } from '../show.js';
import { asObject, intOr, type Check } from './context.js';

/** A probe payload: text as written, or `hex:` followed by hex digits for binary protocols. */
function payloadSchema(description: string): JsonSchema {
  return {
    description: `${description} Text as written (YAML escapes like "\\r\\n" apply), or "hex:" followed by hex digits for raw bytes.`,
    type: 'string',
    minLength: 1,
    maxLength: 1024,
  };
}

/** The schema node of `pools[].health`. */
export const healthSchema = object(
  'Active health probes of every server of the pool. Absent: a TCP connect probe with the defaults.',
  {
    interval: duration('Time between probes of one server.', DEFAULTS.healthIntervalMs),
    timeout: duration('A probe that has not succeeded within this time fails.', DEFAULTS.healthTimeoutMs),
    rise: integer(
      `Consecutive successful probes that mark a down server up, 1 to 100. Default: ${DEFAULTS.healthRise}.`,
      1,
      100,
      DEFAULTS.healthRise,
    ),
    fall: integer(
      `Consecutive failed probes (or failed client connects) that mark an up server down, 1 to 100. Default: ${DEFAULTS.healthFall}.`,
      1,
      100,
      DEFAULTS.healthFall,
    ),
    send: payloadSchema('Sent after connecting, e.g. "PING\\r\\n" for Redis.'),
    expect: payloadSchema('The reply must start with these bytes, e.g. "+PONG" for Redis or "220" for SMTP.'),
  },
);

/** Reads `value` (the pool's `health`, at `path`) with its defaults. */
export function normaliseHealth(check: Check, path: string, value: unknown): HealthModel {
  const h = asObject(value) ?? {};
  return {
    intervalMs: check.timeout(`${path}.interval`, h.interval, DEFAULTS.healthIntervalMs),
    timeoutMs: check.timeout(`${path}.timeout`, h.timeout, DEFAULTS.healthTimeoutMs),
    rise: intOr(h.rise, DEFAULTS.healthRise),
    fall: intOr(h.fall, DEFAULTS.healthFall),
    send: readPayload(check, `${path}.send`, h.send),
    expect: readPayload(check, `${path}.expect`, h.expect),
  };
}

/** A probe payload: text, or `hex:` and an even number of hex digits. */
function readPayload(check: Check, path: string, value: unknown): Buffer | null {
  if (typeof value !== 'string' || value === '') return null;
  if (!value.startsWith('hex:')) return Buffer.from(value, 'utf8');
  const digits = value.slice(4).replace(/\s+/g, '');
  if (digits.length === 0 || digits.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(digits)) {
    check.add(path, `expected "hex:" followed by pairs of hex digits, got ${show(value)}`);
    return null;
  }
  return Buffer.from(digits, 'hex');
}
