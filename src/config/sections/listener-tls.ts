/** `listeners[].tls`: TLS terminated on a listener, or passed through after reading the SNI. */
import { DEFAULTS } from '../../defaults.js';
import { certStoreOptions, loadCertificates } from '../../tls/cert-store.js';
import { TLS_MODES, TLS_VERSIONS } from '../enums.js';
import type { ListenerTlsModel } from '../model.js';
import { filePath, flag, object, oneWordOf, text } from '../schema-nodes.js';
import { formatDuration } from '../duration.js';
import { asObject, boolOr, oneOf, type Check, type TlsDraft } from './context.js';

/** The schema node of `listeners[].tls`. */
export const listenerTlsSchema = object(
  'TLS on this listener. Absent: plain TCP.',
  {
    mode: oneWordOf(
      'terminate: decrypt here (certs required); passthrough: read the ClientHello\'s server name to route, forward the encrypted bytes untouched.',
      TLS_MODES,
    ),
    certs: {
      description: 'terminate: certificate and key files (PEM). The one whose names match the client\'s SNI is served; the first is the default.',
      type: 'array',
      minItems: 1,
      maxItems: 1000,
      items: object(
        'A certificate (chain) and its private key.',
        {
          cert: filePath('PEM certificate file, leaf first.'),
          key: filePath('PEM private key file (unencrypted).'),
        },
        ['cert', 'key'],
      ),
    },
    min_version: oneWordOf(`Lowest TLS version accepted. Default: ${DEFAULTS.tlsMinVersion}.`, TLS_VERSIONS, DEFAULTS.tlsMinVersion),
    ciphers: text('OpenSSL cipher list for TLS 1.2. Default: Node\'s.', 4096),
    alpn: {
      description: 'terminate: protocols offered in ALPN, in order of preference, e.g. [postgresql].',
      type: 'array',
      maxItems: 32,
      items: { type: 'string', minLength: 1, maxLength: 255 },
    },
    client_ca: filePath('terminate: PEM file of the CA(s) for mutual TLS; a client certificate signed by them is then required.'),
    strict_sni: flag(
      'terminate: refuse a ClientHello whose server name (SNI) matches no certificate, or that has none, instead of serving ' +
        'the default certificate (HAProxy strict-sni). Refused connections end as tls_error.',
      DEFAULTS.strictSni,
    ),
    session_tickets: flag(
      'terminate: resume TLS sessions with tickets. The key is per listener, kept across reloads, replaced every ' +
        `${formatDuration(DEFAULTS.ticketKeyRotationMs)} (the previous one still decrypts for ${formatDuration(DEFAULTS.tlsSessionLifetimeMs)}, ` +
        'the session lifetime). false: no tickets and no resumption (TLS 1.2 and 1.3).',
      DEFAULTS.sessionTickets,
    ),
  },
  ['mode'],
);

/** Keys that mean something only when l4lb decrypts. */
const TERMINATE_ONLY = ['certs', 'alpn', 'client_ca', 'ciphers', 'strict_sni', 'session_tickets'] as const;

/**
 * Reads `value` (a listener's `tls`, at `path`); null for plain TCP. A
 * terminating listener's certificates are checked later by
 * {@link checkCertificates}: it is added to `terminating`. `impliedAlpn`:
 * protocols the listener's `protocol` offers by itself (postgres:
 * `postgresql`, which PostgreSQL 17 clients require for direct TLS).
 */
export function normaliseListenerTls(
  check: Check,
  path: string,
  value: unknown,
  terminating: TlsDraft<ListenerTlsModel>[],
  impliedAlpn: readonly string[] = [],
): ListenerTlsModel | null {
  const o = asObject(value);
  if (!o) return null;
  // mode is required: without it (reported by the schema) the other keys are still checked as for terminate.
  const mode = oneOf(o.mode, TLS_MODES, 'terminate');
  const certs = (Array.isArray(o.certs) ? o.certs : []).flatMap((c, i) => {
    const e = asObject(c);
    if (!e || typeof e.cert !== 'string' || typeof e.key !== 'string') return [];
    check.readable(`${path}.certs[${i}].cert`, e.cert);
    check.readable(`${path}.certs[${i}].key`, e.key);
    return [{ cert: e.cert, key: e.key }];
  });
  if (mode === 'terminate' && o.certs === undefined) check.add(`${path}.certs`, 'terminate needs at least one certificate (certs)');
  if (mode === 'passthrough') {
    for (const k of TERMINATE_ONLY) {
      if (o[k] !== undefined) check.add(`${path}.${k}`, 'has no effect with mode: passthrough (l4lb does not decrypt)');
    }
  }
  const alpn = Array.isArray(o.alpn) ? o.alpn.filter((a): a is string => typeof a === 'string') : [];
  for (const a of impliedAlpn) if (!alpn.includes(a)) alpn.push(a);
  const model: ListenerTlsModel = {
    mode,
    certs,
    minVersion: oneOf(o.min_version, TLS_VERSIONS, DEFAULTS.tlsMinVersion),
    ciphers: typeof o.ciphers === 'string' ? o.ciphers : null,
    alpn: mode === 'terminate' ? alpn : [],
    clientCa: check.readable(`${path}.client_ca`, o.client_ca),
    strictSni: boolOr(o.strict_sni, DEFAULTS.strictSni),
    sessionTickets: boolOr(o.session_tickets, DEFAULTS.sessionTickets),
  };
  if (mode === 'terminate') terminating.push({ path, model });
  return model;
}

/**
 * Loads each terminating listener's certificates as serving will: keys must
 * match, files must parse; expiry is only a warning. Skips a listener whose
 * TLS settings already have a problem (an unreadable file).
 */
export async function checkCertificates(check: Check, drafts: readonly TlsDraft<ListenerTlsModel>[]): Promise<void> {
  for (const { path, model } of drafts) {
    if (check.problems.hasBelow(path)) continue;
    const result = await loadCertificates(model.certs, certStoreOptions(model));
    for (const w of result.warnings) check.warnings.push(`${path}.${w}`);
    if (!result.ok) for (const p of result.problems) check.add(p.path === '' ? path : `${path}.${p.path}`, p.message);
  }
}
