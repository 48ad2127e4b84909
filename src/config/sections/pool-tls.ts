/** `pools[].tls`: TLS from l4lb to the servers of a pool (re-encryption). */
import { DEFAULTS } from '../../defaults.js';
import { prepareBackendTls } from '../../tls/backend.js';
import type { PoolTlsModel } from '../model.js';
import { filePath, flag, object, text } from '../schema-nodes.js';
import { asObject, boolOr, type Check, type TlsDraft } from './context.js';

/** The schema node of `pools[].tls`. */
export const poolTlsSchema = object('Encrypt connections to this pool\'s servers (re-encryption). Absent: plain TCP.', {
  servername: text(
    'Server name sent (SNI) and verified in the server\'s certificate. Default: each server\'s host name as written in its address; ' +
      'for an IP address no SNI is sent and the IP is verified.',
    253,
  ),
  ca: filePath('PEM file of the CA(s) that sign the servers\' certificates. Default: the system\'s trusted CAs.'),
  verify: flag('Verify the server certificate. false must be explicit and logs a warning at start.', DEFAULTS.backendTlsVerify),
  cert: filePath('PEM client certificate for servers that require one (with key).'),
  key: filePath('PEM private key of the client certificate (with cert).'),
});

/** Reads `value` (a pool's `tls`, at `path`); null for plain TCP. Its files are checked later by {@link checkPoolTls}. */
export function normalisePoolTls(check: Check, path: string, value: unknown): PoolTlsModel | null {
  const o = asObject(value);
  if (!o) return null;
  if ((o.cert === undefined) !== (o.key === undefined)) check.add(`${path}.${o.cert === undefined ? 'cert' : 'key'}`, 'cert and key go together');
  if (o.verify === false) check.warnings.push(`${path}.verify: false — server certificates are not verified`);
  return {
    servername: typeof o.servername === 'string' ? o.servername : null,
    ca: check.readable(`${path}.ca`, o.ca),
    verify: boolOr(o.verify, DEFAULTS.backendTlsVerify),
    cert: check.readable(`${path}.cert`, o.cert),
    key: check.readable(`${path}.key`, o.key),
  };
}

/**
 * Builds the context each pool will use, so a file that is no CA,
 * certificate or matching key is a problem on its path. Skips a pool
 * whose TLS settings already have a problem (an unreadable file).
 */
export async function checkPoolTls(check: Check, drafts: readonly TlsDraft<PoolTlsModel>[]): Promise<void> {
  await Promise.all(
    drafts.map(async ({ path, model }) => {
      if (check.problems.has(path)) return;
      const result = await prepareBackendTls(model);
      for (const w of result.warnings) check.warnings.push(`${path}.${w}`);
      if (!result.ok) for (const p of result.problems) check.add(p.field === '' ? path : `${path}.${p.field}`, p.message);
    }),
  );
}
