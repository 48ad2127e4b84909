/**
 * Which admin server a CLI client talks to: `--admin URL`, or the
 * `admin.listen` of the configuration file the instance runs (`--config
 * FILE`), so an operator names the file they already know. Only that one
 * key is read: the rest of the file is not validated, its certificates and
 * token file are not opened, and no name is resolved (the URL keeps the
 * host as written), so this works for a user who could not load the whole
 * configuration.
 */
import { AdminClientError, DEFAULT_ADMIN_URL } from '../admin/client.js';
import { parseAddress } from '../config/address.js';
import { readConfig } from '../config/load.js';
import { DEFAULTS } from '../defaults.js';

/**
 * The admin URL the configuration in `file` makes l4lb listen on: a
 * wildcard bind (`0.0.0.0`, `::`) is reached on loopback.
 *
 * @throws ConfigReadError when the file cannot be read or parsed.
 * @throws AdminClientError (L4LB_ADMIN_URL_INVALID) when it has no `admin:` section or its `admin.listen` is not an address.
 */
export async function adminUrlFromConfig(file: string): Promise<string> {
  const raw = await readConfig(file);
  const admin = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>).admin : undefined;
  if (admin === undefined || admin === null) {
    throw new AdminClientError('L4LB_ADMIN_URL_INVALID', `${file} has no admin: section, so l4lb runs no admin server with it; add one, or pass --admin URL`);
  }
  if (typeof admin !== 'object' || Array.isArray(admin)) {
    throw new AdminClientError('L4LB_ADMIN_URL_INVALID', `${file}: admin: expected a section with listen:, like { listen: ${DEFAULTS.adminListen} }`);
  }
  const listen = (admin as Record<string, unknown>).listen ?? DEFAULTS.adminListen;
  const parsed = parseAddress(listen);
  if (typeof parsed === 'string') throw new AdminClientError('L4LB_ADMIN_URL_INVALID', `${file}: admin.listen: ${parsed}`);
  const host = parsed.host === '0.0.0.0' ? '127.0.0.1' : parsed.host === '::' ? '::1' : parsed.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${parsed.port}`;
}

/** `--admin` and `--config` as a client command gets them: the URL to call. */
export async function adminTarget(opts: { readonly admin?: string; readonly config?: string }): Promise<string> {
  if (opts.admin !== undefined) return opts.admin;
  if (opts.config !== undefined) return adminUrlFromConfig(opts.config);
  return DEFAULT_ADMIN_URL;
}
