/**
 * The runtime changes from the command line: `l4lb server add|remove` and
 * `l4lb deny add|remove` call the admin API (see src/runtime/runtime-changes.ts);
 * `l4lb check --diff` lists what they changed as what a reload would undo.
 */
import { AdminClientError, call, errorText } from '../admin/client.js';
import type { DenyAdded, RuntimeChange, ServerAdded, ServerRemoved } from '../runtime/runtime-changes.js';

async function change<T>(admin: string, token: string, method: 'POST' | 'DELETE', path: string, body: unknown, ok: (status: number) => boolean): Promise<T> {
  const r = await call(admin, path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (r.status === 401) throw new AdminClientError('L4LB_ADMIN_REFUSED', `${errorText(r.status, r.body)}; check --token-file or L4LB_ADMIN_TOKEN`);
  if (!ok(r.status)) throw new AdminClientError('L4LB_ADMIN_REFUSED', errorText(r.status, r.body));
  if (typeof r.body !== 'object' || r.body === null) throw new AdminClientError('L4LB_ADMIN_BAD_ANSWER', `${admin} did not answer with JSON; is it the admin server's URL?`);
  return r.body as T;
}

const seg = encodeURIComponent;

export interface ServerSpec {
  readonly address: string;
  readonly name?: string;
  readonly weight?: number;
  readonly backup?: boolean;
}

export function addServer(admin: string, token: string, pool: string, spec: ServerSpec): Promise<ServerAdded> {
  return change(admin, token, 'POST', `pools/${seg(pool)}/servers`, spec, (s) => s === 201);
}

export function removeServer(admin: string, token: string, pool: string, server: string): Promise<ServerRemoved> {
  return change(admin, token, 'DELETE', `pools/${seg(pool)}/servers/${seg(server)}`, undefined, (s) => s === 200);
}

export function addDeny(admin: string, token: string, listener: string, cidr: string, ttl?: string): Promise<DenyAdded> {
  return change(admin, token, 'POST', `listeners/${seg(listener)}/deny`, { cidr, ...(ttl !== undefined ? { ttl } : {}) }, (s) => s === 200 || s === 201);
}

export function removeDeny(admin: string, token: string, listener: string, cidr: string): Promise<{ listener: string; cidr: string }> {
  return change(admin, token, 'DELETE', `listeners/${seg(listener)}/deny`, { cidr }, (s) => s === 200);
}

/** The runtime changes in a `GET /config` answer, those this version understands; anything else reads as none. */
export function runtimeChangesOf(value: unknown): RuntimeChange[] {
  if (!Array.isArray(value)) return [];
  return value.filter((c): c is RuntimeChange => {
    if (typeof c !== 'object' || c === null) return false;
    const o = c as Record<string, unknown>;
    if (o.kind === 'server_added' || o.kind === 'server_removed') return typeof o.pool === 'string' && typeof o.server === 'string' && typeof o.address === 'string';
    return o.kind === 'deny_added' && typeof o.listener === 'string' && typeof o.cidr === 'string';
  });
}
