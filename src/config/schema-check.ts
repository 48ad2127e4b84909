/**
 * The first pass of a check: the parsed file against the JSON Schema (ajv,
 * every error at once), each error worded for people and named by its path.
 */
import { Ajv, type ErrorObject } from 'ajv';
import { parseAddress } from './address.js';
import { parseDuration } from './duration.js';
import { joinPath, pointerToPath, type Problems } from './problems.js';
import { configSchema } from './schema.js';
import { VALUE_KINDS, type JsonSchema } from './schema-nodes.js';
import { show } from './show.js';
import { didYouMean } from './suggest.js';

const ajv = new Ajv({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
const validate = ajv.compile(configSchema);

/** Checks `raw` against the schema and adds a problem per error; the values concerned are then not checked again by meaning. */
export function checkSchema(raw: unknown, problems: Problems): void {
  // validate() is synchronous and keeps its errors on itself: read them before anything else validates.
  if (!validate(raw)) for (const e of validate.errors ?? []) schemaProblem(problems, e);
}

const TYPE_WORDS: Record<string, string> = {
  object: 'an object',
  array: 'a list',
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  null: 'null',
};

function schemaProblem(problems: Problems, e: ErrorObject): void {
  const path = pointerToPath(e.instancePath);
  const node = (e.parentSchema ?? {}) as JsonSchema;
  const got = show(e.data);
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String((e.params as { additionalProperty: unknown }).additionalProperty);
      const data = e.data as Record<string, unknown>;
      const known = Object.keys((node.properties ?? {}) as object).filter((k) => !Object.hasOwn(data, k));
      const keyPath = joinPath(path, key);
      problems.addSchema(keyPath, `unknown key${didYouMean(key, known)}`, keyPath);
      return;
    }
    case 'required': {
      const key = String((e.params as { missingProperty: unknown }).missingProperty);
      problems.addSchema(path, `missing required key "${key}"`, joinPath(path, key));
      return;
    }
    case 'minItems': {
      const title = ((node.items ?? {}) as JsonSchema).title ?? 'item';
      problems.addSchema(path, `expected at least one ${String(title)}, got an empty list`, path);
      return;
    }
  }
  if (path === '' && e.keyword === 'type') {
    const message =
      e.data === null || e.data === undefined
        ? 'the configuration is empty; expected an object with "listeners" and "pools"'
        : `expected an object with "listeners" and "pools" at the top level, got ${got}`;
    problems.addSchema(path, message, path);
    return;
  }
  problems.addSchema(path, `${expected(node, e) ?? e.message ?? 'invalid value'}, got ${got}`, path);
}

/**
 * What a leaf value should look like, worded from its schema node rather
 * than the failed keyword, so `weight: "x"` and `weight: 0` read alike.
 */
function expected(node: JsonSchema, e: ErrorObject): string | undefined {
  const kind = VALUE_KINDS.get(node);
  if (kind !== undefined) {
    const verdict = kind === 'duration' ? parseDuration(e.data) : parseAddress(e.data, { allowPortZero: kind === 'bind' });
    // The parsers say "…, got X" themselves; strip it so the caller adds it once.
    if (typeof verdict === 'string') return verdict.replace(/, got [\s\S]*$/, '');
  }
  if (Array.isArray(node.enum)) return `expected one of ${node.enum.join(', ')}`;
  if (Array.isArray(node.type) && node.type.includes('integer') && typeof node.pattern === 'string' && /^\^\w+\$$/.test(node.pattern)) {
    // An integer or one word (`workers: 4 | auto`).
    return `expected an integer between ${String(node.minimum)} and ${String(node.maximum)}, or "${node.pattern.slice(1, -1)}"`;
  }
  if (node.type === 'integer' && typeof node.minimum === 'number' && typeof node.maximum === 'number') {
    return `expected an integer between ${node.minimum} and ${node.maximum}`;
  }
  if (node.type === 'string' && node.minLength === 1 && typeof node.maxLength === 'number') {
    return `expected a non-empty string of at most ${node.maxLength} characters`;
  }
  if (e.keyword === 'type') {
    const types = ([] as unknown[]).concat((e.params as { type: unknown }).type);
    return `expected ${types.map((t) => TYPE_WORDS[String(t)] ?? String(t)).join(' or ')}`;
  }
  return undefined;
}
