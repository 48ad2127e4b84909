/**
 * The admin API from the command line: `l4lb status`,
 * `l4lb server drain|ready|maint POOL SERVER` and `l4lb check --diff`. Node's global fetch; every
 * failure becomes one line an operator can act on.
 */
import { parseConfigDoc, redactModel, redactionKey, type ModelJson } from '../config/model-json.js';
import { readTokenFile } from '../config/token-file.js';
import { L4lbError, type ErrorCode } from '../errors.js';
import type { AdminState } from '../pool.js';
import type { StatusDoc } from './status.js';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9900';
/** An admin server that has not answered within this is reported, not waited for. */
const REQUEST_TIMEOUT_MS = 10_000;

/**
 * Why an admin call failed: the URL, reaching the server, its answer's
 * status, the answer itself, or the token.
 */
export type AdminClientErrorCode = Extract<
  ErrorCode,
  'L4LB_ADMIN_URL_INVALID' | 'L4LB_ADMIN_UNREACHABLE' | 'L4LB_ADMIN_REFUSED' | 'L4LB_ADMIN_BAD_ANSWER' | 'L4LB_ADMIN_NO_TOKEN'
>;

/** A failure worded for the operator; the CLI prints the message and exits 1. */
export class AdminClientError extends L4lbError {
  constructor(code: AdminClientErrorCode, message: string) {
    super(code, message);
  }
}

/**
 * The admin URL, checked; throws AdminClientError when it is not an http(s) URL.
 * @param option the command-line option that named the URL, for messages.
 */
export function baseUrl(admin: string, option = '--admin'): URL {
  let url: URL;
  try {
    url = new URL(admin);
  } catch {
    throw new AdminClientError('L4LB_ADMIN_URL_INVALID', `${option}: expected a URL like ${DEFAULT_ADMIN_URL}, got "${admin}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new AdminClientError('L4LB_ADMIN_URL_INVALID', `${option}: expected an http:// or https:// URL, got "${admin}"`);
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

export async function call(admin: string, path: string, init: RequestInit = {}, option = '--admin'): Promise<{ status: number; body: unknown }> {
  const base = baseUrl(admin, option);
  const url = new URL(path, base);
  let res: Response;
  try {
    res = await fetch(url, { ...init, redirect: 'error', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const why =
      e.name === 'TimeoutError' ? `no answer within ${REQUEST_TIMEOUT_MS / 1000}s` : (e.cause?.code ?? e.cause?.message ?? e.message);
    throw new AdminClientError('L4LB_ADMIN_UNREACHABLE', `cannot reach the admin server at ${base.origin}: ${why} (is l4lb running with an admin: section? see ${option})`);
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body };
}

export function errorText(status: number, body: unknown): string {
  const message =
    typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string'
      ? (body as { error: string }).error
      : String(body).trim().slice(0, 200);
  return `admin server answered ${status}: ${message || 'no message'}`;
}

export async function fetchStatus(admin: string): Promise<StatusDoc> {
  const { status, body } = await call(admin, 'status');
  if (status !== 200) throw new AdminClientError('L4LB_ADMIN_REFUSED', errorText(status, body));
  if (typeof body !== 'object' || body === null || !Array.isArray((body as StatusDoc).pools)) {
    throw new AdminClientError('L4LB_ADMIN_BAD_ANSWER', `${admin} did not answer with l4lb status JSON; is it the admin server's URL?`);
  }
  return body as StatusDoc;
}

/**
 * The running model from `GET /config` (payloads redacted), for `l4lb check --diff`.
 *
 * The answer is redacted once more with the same token's key: an older l4lb
 * that serves payloads in clear then reads the same as a newer one, and
 * nothing secret is kept. Redact the other side of a comparison with
 * {@link redactForToken} too.
 *
 * @param option the option that named the URL, for messages
 */
export async function fetchConfig(admin: string, token: string, option = '--diff'): Promise<ModelJson> {
  return (await fetchRunning(admin, token, option)).model;
}

/** {@link fetchConfig}'s model, and the runtime changes the instance lists beside it (`runtime`; absent from an older l4lb). */
export async function fetchRunning(admin: string, token: string, option = '--diff'): Promise<{ model: ModelJson; runtime: unknown }> {
  const { status, body } = await call(admin, 'config', { headers: { Authorization: `Bearer ${token}` } }, option);
  if (status === 404 && typeof body === 'object' && body !== null) {
    throw new AdminClientError('L4LB_ADMIN_REFUSED', `${errorText(status, body)}; is the running l4lb older than this one? (GET /config is needed for --diff)`);
  }
  if (status === 401) throw new AdminClientError('L4LB_ADMIN_REFUSED', `${errorText(status, body)}; check --token-file, L4LB_ADMIN_TOKEN or the checked file's admin.token_file`);
  if (status !== 200) throw new AdminClientError('L4LB_ADMIN_REFUSED', errorText(status, body));
  const model = parseConfigDoc(body);
  if (typeof model === 'string') throw new AdminClientError('L4LB_ADMIN_BAD_ANSWER', `${admin}/config is not an l4lb configuration document: ${model}`);
  return { model: redactForToken(model, token), runtime: (body as { runtime?: unknown }).runtime };
}

/** A model with its secrets redacted as the admin server with this token redacts them, so the two compare. */
export function redactForToken(model: Parameters<typeof redactModel>[0], token: string): ModelJson {
  return redactModel(model, redactionKey(token));
}

export interface StateChange {
  readonly pool: string;
  readonly server: string;
  readonly from: AdminState;
  readonly to: AdminState;
}

export async function setServerState(admin: string, token: string, pool: string, server: string, state: AdminState): Promise<StateChange> {
  const path = `pools/${encodeURIComponent(pool)}/servers/${encodeURIComponent(server)}/state`;
  const { status, body } = await call(admin, path, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ state }),
  });
  if (status === 401) throw new AdminClientError('L4LB_ADMIN_REFUSED', `${errorText(status, body)}; check --token-file or L4LB_ADMIN_TOKEN`);
  if (status !== 200) throw new AdminClientError('L4LB_ADMIN_REFUSED', errorText(status, body));
  return body as StateChange;
}

/**
 * The token from `--token-file`, else from `L4LB_ADMIN_TOKEN`, else (`l4lb
 * check --diff`, which passes `checked`) from the checked file's
 * `admin.token_file`.
 */
export async function resolveToken(
  tokenFile: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  checked?: { readonly tokenFile: string | null },
): Promise<string> {
  const read = async (file: string, what: string): Promise<string> => {
    const r = await readTokenFile(file);
    if (typeof r === 'string') throw new AdminClientError('L4LB_ADMIN_NO_TOKEN', `${what}: ${r}`);
    return r.token;
  };
  if (tokenFile !== undefined) return read(tokenFile, '--token-file');
  const fromEnv = env.L4LB_ADMIN_TOKEN?.trim();
  if (fromEnv) return fromEnv;
  if (checked === undefined) throw new AdminClientError('L4LB_ADMIN_NO_TOKEN', 'no admin token: pass --token-file FILE or set L4LB_ADMIN_TOKEN');
  if (checked.tokenFile !== null) return read(checked.tokenFile, "the checked file's admin.token_file");
  throw new AdminClientError('L4LB_ADMIN_NO_TOKEN', "no admin token for --diff (GET /config needs it): pass --token-file FILE, set L4LB_ADMIN_TOKEN, or set admin.token_file in the checked file");
}

// ---------------------------------------------------------------------------
// Tables (the status table itself: ../cli/status-table.ts)

/** Columns padded to their widest cell; `right` columns are right-aligned (numbers). */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[], right: ReadonlySet<number> = new Set(), indent = ''): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    indent +
    cells
      .map((c, i) => (i === cells.length - 1 && !right.has(i) ? c : right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}
