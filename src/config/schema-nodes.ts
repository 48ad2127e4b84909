/**
 * Building blocks of the configuration's JSON Schema: the node kinds every
 * section uses (durations, names, objects that reject unknown keys, word
 * lists, flags), each writing its default into its description from the
 * same value the loader falls back to.
 */
import { DURATION_PATTERN, MAX_DURATION_MS, formatDuration } from './duration.js';

/** A JSON Schema node; loose on purpose, ajv checks the schema itself at compile time. */
export type JsonSchema = { [keyword: string]: unknown };

/**
 * Values whose form is checked by a parser of ours rather than by the schema
 * alone. The loader words every schema error on these nodes the way the
 * parser would, so `idle: true` and `idle: "3x"` read alike.
 */
export const VALUE_KINDS = new WeakMap<object, 'duration' | 'address' | 'bind'>();

/** Marks `schema` as checked by one of our parsers (see {@link VALUE_KINDS}). */
export function kind<T extends JsonSchema>(k: 'duration' | 'address' | 'bind', schema: T): T {
  VALUE_KINDS.set(schema, k);
  return schema;
}

/** A duration whose default is written in the description and as the schema default. */
export function duration(description: string, defaultMs: number): JsonSchema {
  const text = formatDuration(defaultMs);
  return durationNode(`${description} A duration like "500ms", "3s", "5m", "1h", or integer milliseconds. Default: ${text}.`, text);
}

/** A duration node whose description its caller writes in full, default included (`slow_start`: 0 means off). */
export function durationNode(description: string, defaultValue: string | number): JsonSchema {
  return kind('duration', {
    description,
    type: ['string', 'integer'],
    pattern: DURATION_PATTERN,
    minimum: 0,
    maximum: MAX_DURATION_MS,
    default: defaultValue,
  });
}

/** A non-empty string of at most `maxLength` characters. */
export function text(description: string, maxLength: number): JsonSchema {
  return { description, type: 'string', minLength: 1, maxLength };
}

/** A name (of a pool, listener, server, route target). */
export function name(description: string): JsonSchema {
  return text(description, 200);
}

/** A file path (certificates, keys, CAs, the token file). */
export function filePath(description: string): JsonSchema {
  return text(description, 4096);
}

/** Object nodes reject unknown keys, so a misspelled key is an error, not a silent default. */
export function object(description: string, properties: Record<string, JsonSchema>, required: string[] = [], title?: string): JsonSchema {
  const node: JsonSchema = title === undefined ? {} : { title };
  Object.assign(node, { description, type: 'object', additionalProperties: false, properties });
  if (required.length > 0) node.required = required;
  return node;
}

/** One word of `words`; with a default, the schema carries it (the description names it itself). */
export function oneWordOf(description: string, words: readonly string[], defaultWord?: string): JsonSchema {
  const node: JsonSchema = { description, enum: [...words] };
  if (defaultWord !== undefined) node.default = defaultWord;
  return node;
}

/** true or false, its default named at the end of the description. */
export function flag(description: string, defaultValue: boolean): JsonSchema {
  return { description: `${description} Default: ${defaultValue}.`, type: 'boolean', default: defaultValue };
}

/** A whole number in a range; with a default, the schema carries it (the description names it itself). */
export function integer(description: string, minimum: number, maximum: number, defaultValue?: number): JsonSchema {
  const node: JsonSchema = { description, type: 'integer', minimum, maximum };
  if (defaultValue !== undefined) node.default = defaultValue;
  return node;
}

/** A list of CIDR strings (allow, deny, trusted_proxies). */
export function cidrList(description: string, maxItems: number): JsonSchema {
  return { description, type: 'array', maxItems, items: { type: 'string', maxLength: 64 } };
}
