/**
 * The running model as JSON: what `GET /config` serves and `l4lb check
 * --diff` reads back.
 *
 * The document is `{"version": 1, "model": MODEL}` where MODEL is the frozen
 * {@link Model} with its own field names (camelCase, durations in ms,
 * addresses as `{host, port, text}`). Every Buffer in the model is a secret
 * or may hold one (the probe payloads `health.send` and `health.expect`, say
 * an `AUTH password` line): a value read from a secret file must be kept in
 * the model as a Buffer so that it is treated the same way. A Buffer is
 * served in one of two forms:
 *
 * - redacted (the default): `{"redacted": "hmac-sha256", "mac": HEX}`, an
 *   HMAC keyed by a key derived from the admin token ({@link redactionKey}).
 *   Without the token the MAC says nothing about the bytes, even a short
 *   password (a plain hash could be reversed by trying candidates); with it,
 *   `check --diff` computes the MAC of its own file's payload and so sees a
 *   changed payload without either side's bytes crossing the wire.
 * - revealed (`GET /config?reveal=secrets`, token required too):
 *   `{"hex": "50494e470d0a"}`, exact for any bytes, and the same spelling as
 *   the configuration's `hex:` payloads.
 *
 * The admin token itself is never in the model (only `tokenFile`, a path);
 * certificate and key files are named by path only.
 */
import { createHmac } from 'node:crypto';
import type { Model } from './model.js';

/** Bumped when a field changes meaning; new fields alone do not bump it. */
export const CONFIG_DOC_VERSION = 1;

/** A Buffer in the JSON form, revealed. */
export interface HexBytes {
  readonly hex: string;
}

/** A Buffer in the JSON form, redacted: a MAC keyed by {@link redactionKey}, never the bytes. */
export interface RedactedBytes {
  readonly redacted: 'hmac-sha256';
  /** HMAC-SHA256 of the bytes, hex. */
  readonly mac: string;
}

/** A Buffer as `GET /config` serves it. */
export type BytesJson = HexBytes | RedactedBytes;

/** `T` as it reads after {@link modelToJson} (and JSON.stringify/parse). */
export type Jsonified<T> = T extends Buffer
  ? BytesJson
  : T extends readonly (infer U)[]
    ? readonly Jsonified<U>[]
    : T extends object
      ? { readonly [K in keyof T]: Jsonified<T[K]> }
      : T;

export type ModelJson = Jsonified<Model>;

/** What `GET /config` answers. */
export interface ConfigDoc {
  readonly version: number;
  readonly model: ModelJson;
}

/** A deep copy with Buffers as `{hex}` (revealed); anything already in JSON form passes through unchanged. */
export function modelToJson(model: Model | ModelJson): ModelJson {
  return jsonify(model, (b) => ({ hex: b.toString('hex') })) as ModelJson;
}

/**
 * A deep copy with every Buffer (or revealed `{hex}`) redacted with `key`;
 * already redacted values pass through. Redacting both sides of a
 * comparison with the same key keeps equal bytes equal and different bytes
 * different.
 */
export function redactModel(model: Model | ModelJson, key: Buffer): ModelJson {
  return jsonify(model, (b) => redactBytes(b, key)) as ModelJson;
}

/**
 * The redaction key for a given admin token. Derived rather than the token
 * itself, so a MAC never doubles as a token check; the admin server keeps
 * only this and a digest of the token.
 */
export function redactionKey(token: string): Buffer {
  return createHmac('sha256', token).update('l4lb GET /config redaction v1').digest();
}

/** The redacted form of some bytes. */
export function redactBytes(bytes: Buffer, key: Buffer): RedactedBytes {
  return { redacted: 'hmac-sha256', mac: createHmac('sha256', key).update(bytes).digest('hex') };
}

export function isRedacted(value: unknown): value is RedactedBytes {
  const o = obj(value);
  return o !== undefined && o.redacted === 'hmac-sha256' && typeof o.mac === 'string';
}

/** `{hex}` and nothing else: a revealed Buffer (no other object in the model has this shape). */
function isHexBytes(value: unknown): value is HexBytes {
  const o = obj(value);
  return o !== undefined && typeof o.hex === 'string' && Object.keys(o).length === 1;
}

function jsonify(value: unknown, bytes: (b: Buffer) => BytesJson): unknown {
  if (Buffer.isBuffer(value)) return bytes(value);
  if (isHexBytes(value)) return bytes(Buffer.from(value.hex, 'hex'));
  if (isRedacted(value)) return { redacted: value.redacted, mac: value.mac };
  if (Array.isArray(value)) return value.map((v) => jsonify(v, bytes));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonify(v, bytes);
    return out;
  }
  return value;
}

/**
 * The `GET /config` document for a model.
 * @param redactWith the redaction key; absent: Buffers revealed as `{hex}`
 */
export function configDoc(model: Model, redactWith?: Buffer): ConfigDoc {
  return { version: CONFIG_DOC_VERSION, model: redactWith === undefined ? modelToJson(model) : redactModel(model, redactWith) };
}

/** Bytes from their revealed JSON form (or a Buffer, as is); null stays null, and so does a redacted value. */
export function bytesFromJson(value: BytesJson | Buffer | null | undefined): Buffer | null {
  if (value === null || value === undefined || isRedacted(value)) return null;
  if (Buffer.isBuffer(value)) return value;
  return Buffer.from(value.hex, 'hex');
}

/**
 * Checks that a parsed `GET /config` answer is a document this version can
 * compare against, and returns its model.
 *
 * Only what a comparison cannot do without is checked (names, binds,
 * servers); a field an older or newer l4lb does not report reads as missing.
 *
 * @returns the model, or (a string) what is wrong with the document.
 */
export function parseConfigDoc(value: unknown): ModelJson | string {
  const doc = obj(value);
  if (doc === undefined || !('model' in doc)) return 'expected a JSON object with "version" and "model"';
  if (doc.version !== CONFIG_DOC_VERSION) {
    return `configuration document version ${JSON.stringify(doc.version)}, this l4lb reads version ${CONFIG_DOC_VERSION}; use the same l4lb version on both sides`;
  }
  const model = obj(doc.model);
  if (model === undefined) return '"model" is not an object';
  if (!Array.isArray(model.listeners)) return 'model.listeners is not a list';
  if (!Array.isArray(model.pools)) return 'model.pools is not a list';
  for (const [i, l] of model.listeners.entries()) {
    const o = obj(l);
    if (o === undefined || typeof o.name !== 'string') return `model.listeners[${i}] has no name`;
    if (!isEndpoint(o.bind)) return `model.listeners[${i}].bind is not an address`;
  }
  for (const [i, p] of model.pools.entries()) {
    const o = obj(p);
    if (o === undefined || typeof o.name !== 'string' || typeof o.balance !== 'string') return `model.pools[${i}] has no name or balance`;
    if (!Array.isArray(o.servers)) return `model.pools[${i}].servers is not a list`;
    for (const [j, s] of o.servers.entries()) {
      const so = obj(s);
      if (so === undefined || typeof so.name !== 'string' || typeof so.weight !== 'number' || !(so.weight > 0) || typeof so.backup !== 'boolean' || !isEndpoint(so.address)) {
        return `model.pools[${i}].servers[${j}] is not a server (name, address, weight, backup)`;
      }
    }
  }
  if (model.admin !== null && model.admin !== undefined && !isEndpoint(obj(model.admin)?.listen)) return 'model.admin.listen is not an address';
  return model as unknown as ModelJson;
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function isEndpoint(v: unknown): boolean {
  const o = obj(v);
  return o !== undefined && typeof o.host === 'string' && typeof o.port === 'number' && typeof o.text === 'string';
}
