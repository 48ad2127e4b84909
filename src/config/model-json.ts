/**
 * The running model as JSON: what `GET /config` serves and `l4lb check
 * --diff` reads back.
 *
 * The document is `{"version": 1, "model": MODEL}` where MODEL is the frozen
 * {@link Model} with its own field names (camelCase, durations in ms,
 * addresses as `{host, port, text}`), and every Buffer (the probe payloads
 * `health.send` and `health.expect`) as `{"hex": "50494e470d0a"}`: exact for
 * any bytes, and the same spelling as the configuration's `hex:` payloads.
 *
 * There is nothing secret in it: the model never holds the admin token
 * (only `tokenFile`, a path) and names certificate and key files by path only.
 */
import type { Model } from './model.js';

/** Bumped when a field changes meaning; new fields alone do not bump it. */
export const CONFIG_DOC_VERSION = 1;

/** A Buffer in the JSON form. */
export interface HexBytes {
  readonly hex: string;
}

/** `T` as it reads after {@link modelToJson} (and JSON.stringify/parse). */
export type Jsonified<T> = T extends Buffer
  ? HexBytes
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

/** A deep copy with Buffers as `{hex}`; anything already in JSON form passes through unchanged. */
export function modelToJson(model: Model | ModelJson): ModelJson {
  return jsonify(model) as ModelJson;
}

function jsonify(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return { hex: value.toString('hex') };
  if (Array.isArray(value)) return value.map(jsonify);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonify(v);
    return out;
  }
  return value;
}

/** The `GET /config` document for a model. */
export function configDoc(model: Model): ConfigDoc {
  return { version: CONFIG_DOC_VERSION, model: modelToJson(model) };
}

/** Bytes from their JSON form (or a Buffer, as is); null stays null. */
export function bytesFromJson(value: HexBytes | Buffer | null | undefined): Buffer | null {
  if (value === null || value === undefined) return null;
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
