/**
 * Reading, validating and normalising a configuration into the frozen
 * {@link Model}. Every problem is collected, so one `l4lb check` run shows
 * them all; nothing but ConfigError or ConfigReadError ever escapes.
 *
 * A check runs in passes: the schema (./schema-check.ts), then each
 * section's meaning (./sections/: pools first, since listeners name them),
 * then, once every name is resolved and every file known readable, the
 * certificates and backend TLS contexts, and last the binds against each other.
 */

import { readFile, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { parseDocument } from 'yaml';
import { DnsResolver } from '../dns/resolver.js';
import { ConfigError, ConfigReadError, describe, type ConfigProblem } from '../errors.js';
import { jsonErrorOffset, positionOf } from './json-position.js';
import type { Model } from './model.js';
import { checkSchema } from './schema-check.js';
import { normaliseAdmin } from './sections/admin.js';
import { checkBinds } from './sections/binds.js';
import { Check, asObject } from './sections/context.js';
import { checkGeoip, normaliseListeners } from './sections/listener.js';
import { checkCertificates } from './sections/listener-tls.js';
import { settleServersTls } from './sections/health.js';
import { normalisePools } from './sections/pool.js';
import { checkPoolTls } from './sections/pool-tls.js';
import { normaliseDns, normaliseGrace, normaliseLog, normalisePrivilegeDrop, normaliseWorkers } from './sections/top.js';

/** Larger files are refused unread: a real configuration is a few kilobytes. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
/** More problems than this are summarised; nobody reads the ten-thousandth. */
const MAX_PROBLEMS = 100;

/**
 * Reads, validates and normalises a configuration file: YAML for `.yaml` and
 * `.yml`, JSON for `.json`. Hostnames are resolved.
 *
 * @throws ConfigReadError when the file cannot be read or parsed.
 * @throws ConfigError listing every problem when the content is invalid.
 */
export async function loadConfig(file: string, options: LoadOptions = {}): Promise<Model> {
  return buildModel(await readConfig(file), file, options);
}

/** How a load treats server host names. */
export interface LoadOptions {
  /** false: no lookup at all (`l4lb check --no-resolve`, CI without DNS); every host-name server is unresolved. Default: true. */
  readonly resolve?: boolean;
}

/**
 * Reads and parses a configuration file without validating it.
 *
 * @throws ConfigReadError when the file cannot be read or parsed.
 */
export async function readConfig(file: string): Promise<unknown> {
  const ext = extname(file).toLowerCase();
  if (ext !== '.yaml' && ext !== '.yml' && ext !== '.json') {
    const what = ext === '' ? 'no file extension' : `unsupported file extension "${ext}"`;
    throw new ConfigReadError(file, `${what}; use .yaml, .yml or .json`);
  }
  const text = await readText(file);
  return ext === '.json' ? parseJson(file, text) : parseYaml(file, text);
}

async function readText(file: string): Promise<string> {
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch (err) {
    throw new ConfigReadError(file, err);
  }
  if (size > MAX_FILE_BYTES) throw new ConfigReadError(file, `file is larger than ${MAX_FILE_BYTES} bytes`);
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigReadError(file, err);
  }
}

function parseJson(file: string, text: string): unknown {
  // Editors on Windows like to write a byte-order mark, which JSON.parse rejects.
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  try {
    return JSON.parse(body);
  } catch (err) {
    // A line and column are what editors jump to; Node 20 names only an offset
    // (Node 22+ names both itself, and then they appear twice).
    const offset = jsonErrorOffset(body);
    if (offset < 0) throw new ConfigReadError(file, err);
    const { line, column } = positionOf(body, offset);
    throw new ConfigReadError(file, `${describe(err)} (line ${line}, column ${column})`);
  }
}

function parseYaml(file: string, text: string): unknown {
  // Duplicate keys are errors (the yaml default): the later value silently winning hides mistakes.
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigReadError(file, doc.errors.slice(0, 5).map((e) => e.message.trim()).join('\n'));
  }
  try {
    // The alias cap stops "billion laughs" documents from expanding without bound.
    return doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigReadError(file, err);
  }
}

/**
 * Validates an already parsed configuration and builds the frozen model,
 * applying defaults and resolving hostnames. Used by {@link loadConfig},
 * by reloads and by tests.
 *
 * @param file - named in the error message only.
 * @throws ConfigError listing every problem found; never anything else.
 */
export async function buildModel(raw: unknown, file?: string, options: LoadOptions = {}): Promise<Model> {
  let result: { problems: ConfigProblem[]; model: Model };
  try {
    result = await checkModel(raw, options);
  } catch (err) {
    // A bug here must still look like a rejected configuration, so a reload keeps running on the old one.
    throw new ConfigError([{ path: '', message: `internal error while checking the configuration: ${describe(err)}` }], file);
  }
  const { problems, model } = result;
  if (problems.length === 0) return model;
  const shown = problems.slice(0, MAX_PROBLEMS);
  if (problems.length > MAX_PROBLEMS) shown.push({ path: '', message: `and ${problems.length - MAX_PROBLEMS} more problems` });
  throw new ConfigError(shown, file);
}

async function checkModel(raw: unknown, options: LoadOptions): Promise<{ problems: ConfigProblem[]; model: Model }> {
  const check = new Check();
  checkSchema(raw, check.problems);
  const root = asObject(raw) ?? {};
  // dns first: it says how the servers' host names are resolved.
  const dns = normaliseDns(check, root.dns);
  const resolver = options.resolve === false ? null : new DnsResolver({ servers: dns.servers });
  // Pools next: listeners refer to them by name.
  const pools = normalisePools(check, root.pools, { resolver });
  const listeners = normaliseListeners(check, root.listeners, pools.names);
  checkGeoip(check, root.geoip);
  const admin = normaliseAdmin(check, root.admin, root);
  const privileges = normalisePrivilegeDrop(check, root);
  await check.settled();
  pools.settle();
  // Whether a pool's servers speak TLS (its default probe kind) depends on the listeners that reach it.
  settleServersTls(pools.pools, listeners.listeners.map((d) => d.value));
  // Skipped where a file was already reported unreadable.
  await checkCertificates(check, listeners.terminating);
  await checkPoolTls(check, pools.tls);
  checkBinds(check.problems, [
    ...listeners.listeners.map((d) => ({ path: `${d.path}.bind`, owner: d.path, bind: d.value.bind })),
    ...(admin ? [{ path: 'admin.listen', owner: 'admin', bind: admin.value.listen }] : []),
  ]);
  const model: Model = {
    admin: admin?.value ?? null,
    log: normaliseLog(root.log),
    workers: normaliseWorkers(root.workers),
    grace: normaliseGrace(check, root.grace),
    dns,
    listeners: listeners.listeners.map((d) => d.value),
    pools: pools.pools,
    warnings: check.warnings,
    ...privileges,
  };
  return { problems: check.problems.sorted(), model: deepFreeze(model) };
}

function deepFreeze<T>(value: T): T {
  // Buffers (probe payloads) cannot be frozen; the engine throws on typed arrays with elements.
  if (typeof value === 'object' && value !== null && !ArrayBuffer.isView(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
