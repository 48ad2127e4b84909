/**
 * TLS from l4lb to a pool's servers (pool `tls`).
 *
 * The context (CA bundle, client certificate and key) is built when the
 * configuration loads, and building it is the check: the CA and the client
 * certificate must parse as X509 certificates, the key must parse and match
 * the certificate. A bad file is a configuration problem on its own path
 * (`pools[1].tls.ca: CA file /etc/l4lb/ca.pem contains no PEM certificate`),
 * so `l4lb check`, `l4lb run` and a reload report it alike, and a reload
 * that names one is refused while the running configuration stays. The
 * context built at load is the one the pool uses: it is kept beside the
 * frozen model (a WeakMap keyed by the pool's TLS model), never in it, so it
 * stays out of the model's JSON.
 *
 * Identity: the server name sent (SNI) and verified is `servername` if
 * configured, else each server's host name as written in its address; an IP
 * literal gets no SNI and its IP is verified. Addresses are resolved at load,
 * so the name as written is the only name there is to check.
 *
 * Private key bytes are zeroed once OpenSSL has them; messages name files only.
 */
import { isIP } from 'node:net';
import type net from 'node:net';
import tls from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import { parseAddress } from '../config/address.js';
import type { Endpoint, PoolTlsModel } from '../config/model.js';
import { DEFAULTS } from '../defaults.js';
import { ConfigError } from '../errors.js';
import { normaliseServerName } from './client-hello.js';
import { parseCertificates, parsePrivateKey, publicKeysEqual, readPem, readPemSync, safeReason, validityWarnings } from './pem.js';

/** One reason a pool's TLS settings cannot be used. */
export interface BackendTlsProblem {
  /** The key of pool `tls` it concerns; '' for the settings as a whole. */
  readonly field: 'ca' | 'cert' | 'key' | '';
  /** Names the file, never contains key material. */
  readonly message: string;
}

/** Result of {@link prepareBackendTls}. Warnings (an expired CA or certificate) start with their field: `ca: ...`. */
export type BackendTlsResult =
  | { readonly ok: true; readonly options: tls.ConnectionOptions; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly problems: readonly BackendTlsProblem[]; readonly warnings: readonly string[] };

/** Contexts built at load, by the model they were built for. */
const prepared = new WeakMap<PoolTlsModel, tls.ConnectionOptions>();

/**
 * Reads and checks a pool's TLS files and builds its context; on success the
 * pool built from this same model uses it ({@link backendTlsOptions}).
 */
export async function prepareBackendTls(model: PoolTlsModel): Promise<BackendTlsResult> {
  const [ca, cert, key] = await Promise.all([
    model.ca !== null ? readPem(model.ca, 'CA file') : null,
    model.cert !== null ? readPem(model.cert, 'client certificate file') : null,
    model.key !== null ? readPem(model.key, 'client key file') : null,
  ]);
  const result = build(model, ca, cert, key);
  if (result.ok) prepared.set(model, result.options);
  return result;
}

/**
 * Connection options for a pool: the context built at load, or (for a model
 * that did not come through the loader) built now, reading the files.
 *
 * @param where names the pool in a ConfigError, e.g. `pool pg: tls`.
 * @throws ConfigError when a file is bad (only in the second case).
 */
export function backendTlsOptions(model: PoolTlsModel, where: string): tls.ConnectionOptions {
  const ready = prepared.get(model);
  if (ready !== undefined) return ready;
  const result = build(
    model,
    model.ca !== null ? readPemSync(model.ca, 'CA file') : null,
    model.cert !== null ? readPemSync(model.cert, 'client certificate file') : null,
    model.key !== null ? readPemSync(model.key, 'client key file') : null,
  );
  if (!result.ok) {
    throw new ConfigError(result.problems.map((p) => ({ path: p.field === '' ? where : `${where}.${p.field}`, message: p.message })));
  }
  prepared.set(model, result.options);
  return result.options;
}

/** Each argument: the file's bytes, a read problem (string), or null when not configured. */
function build(model: PoolTlsModel, caRead: Buffer | string | null, certRead: Buffer | string | null, keyRead: Buffer | string | null): BackendTlsResult {
  const problems: BackendTlsProblem[] = [];
  const warnings: string[] = [];
  const now = Date.now();

  let ca: Buffer | undefined;
  if (model.ca !== null && caRead !== null) {
    const parsed = typeof caRead === 'string' ? caRead : parseCertificates(caRead, model.ca, 'CA file');
    if (typeof parsed === 'string') problems.push({ field: 'ca', message: parsed });
    else {
      parsed.forEach((c, i) => validityWarnings(c, now, `ca: CA certificate ${i + 1} in ${model.ca}`, warnings));
      ca = caRead as Buffer;
    }
  }

  let chain: X509Certificate[] | null = null;
  if (model.cert !== null && certRead !== null) {
    const parsed = typeof certRead === 'string' ? certRead : parseCertificates(certRead, model.cert, 'client certificate file');
    if (typeof parsed === 'string') problems.push({ field: 'cert', message: parsed });
    else {
      chain = parsed;
      validityWarnings(parsed[0] as X509Certificate, now, `cert: client certificate ${model.cert}`, warnings);
    }
  }

  let keyPem: Buffer | undefined;
  if (model.key !== null && keyRead !== null) {
    if (typeof keyRead === 'string') problems.push({ field: 'key', message: keyRead });
    else {
      keyPem = keyRead;
      const key = parsePrivateKey(keyRead, model.key, (message) => {
        problems.push({ field: 'key', message });
        return null;
      });
      if (key !== null && chain !== null && !publicKeysEqual(chain[0] as X509Certificate, key)) {
        problems.push({ field: 'key', message: `private key in ${model.key} does not match the certificate in ${model.cert}` });
      }
    }
  }

  try {
    if (problems.length > 0) return { ok: false, problems, warnings };
    let secureContext: tls.SecureContext;
    try {
      secureContext = tls.createSecureContext({
        minVersion: DEFAULTS.tlsMinVersion,
        ...(ca !== undefined ? { ca } : {}),
        ...(certRead instanceof Buffer ? { cert: certRead } : {}),
        ...(keyPem !== undefined ? { key: keyPem } : {}),
      });
    } catch (err) {
      // The files were checked one by one; this is OpenSSL refusing the combination.
      return { ok: false, problems: [{ field: '', message: `cannot create a TLS context: ${safeReason(err)}` }], warnings };
    }
    const options: tls.ConnectionOptions = {
      secureContext,
      rejectUnauthorized: model.verify,
      ...(model.servername !== null ? { servername: model.servername } : {}),
    };
    return { ok: true, options, warnings };
  } finally {
    keyPem?.fill(0);
  }
}

/** Names derived from addresses, by address (endpoints are frozen and live as long as their server). */
const names = new WeakMap<Endpoint, string | null>();

/**
 * The name a server's certificate must carry, and the SNI sent: its host
 * name as written (lower case, no trailing dot), or null for an IP literal.
 */
export function serverName(address: Endpoint): string | null {
  let name = names.get(address);
  if (name === undefined) {
    const parsed = parseAddress(address.text);
    name = typeof parsed === 'string' || isIP(parsed.host) !== 0 ? null : normaliseServerName(parsed.host);
    names.set(address, name);
  }
  return name;
}

/**
 * Options for `tls.connect` over an already connected socket to `address`:
 * the pool's options with the identity to send and verify. Without a name
 * (an IP literal) no SNI is sent and the certificate is checked against the
 * IP; a configured `servername` that is an IP is verified, never sent (RFC
 * 6066 allows no IP in SNI).
 */
export function backendConnectOptions(options: tls.ConnectionOptions, socket: net.Socket, address: Endpoint): tls.ConnectionOptions {
  const name = options.servername ?? serverName(address);
  if (name === null) return { ...options, socket, host: address.host };
  if (isIP(name) !== 0) {
    const { servername: _ip, ...rest } = options;
    return { ...rest, socket, host: name };
  }
  return { ...options, socket, host: address.host, servername: name };
}
