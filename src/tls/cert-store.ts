/**
 * Certificates for TLS termination (`listeners[].tls.certs`): builds one
 * `tls.SecureContext` per certificate from files checked by ./pem.ts, and
 * picks the context for a client's SNI.
 *
 * Problems are returned as data, never thrown, so `l4lb check` can print all
 * of them and a reload can keep the running store when a file is bad.
 *
 * Selection: an exact SAN match first (in configuration order), then a
 * wildcard match, then the first certificate (the default). Certificate
 * wildcards follow RFC 6125 §6.4.3: `*.a.test` covers exactly one label
 * (`x.a.test`), neither `a.test` nor `x.y.a.test`. (Route wildcards in
 * sni-routes.ts are deliberately wider: there no certificate check applies.)
 *
 * Secrets: private key bytes are read, handed to OpenSSL and zeroed (only
 * the default certificate's key is kept, in a #private field, for
 * {@link CertStore.applyTo}); they are never logged or put in a message,
 * and a store prints no secrets when inspected. Messages name files and
 * certificate facts only, and OpenSSL reasons are scrubbed of anything
 * PEM- or base64-shaped as a second line of defence.
 */
import { constants as cryptoConstants, createHash, randomBytes } from 'node:crypto';
import tls from 'node:tls';
import { DEFAULTS } from '../defaults.js';
import type { ListenerTlsModel } from '../config/model.js';
import { loadPair, parseCertificates, readPem, safeReason, validityWarnings, type CertEntry, type CertFacts, type CertProblem } from './pem.js';
import { normaliseServerName } from './server-name.js';

export type { CertEntry, CertProblem } from './pem.js';

/** Everything known about one loaded certificate, and its TLS context. */
export interface CertInfo extends CertFacts {
  context: tls.SecureContext;
}


/** Context options applied to every certificate's SecureContext. */
export type CertContextOptions = Omit<
  tls.SecureContextOptions,
  'cert' | 'key' | 'pfx' | 'passphrase' | 'ca' | 'ticketKeys' | 'privateKeyEngine' | 'privateKeyIdentifier'
>;

/** Options for {@link loadCertificates}. */
export interface CertStoreOptions {
  /**
   * PEM CA bundle that client certificates must chain to (mutual TLS). It is
   * put into every context, because an SNI switch replaces the whole context;
   * the TLS socket still needs `requestCert: true, rejectUnauthorized: true`.
   */
  clientCa?: string;
  /** E.g. `{ minVersion: 'TLSv1.3', ciphers }`; `minVersion` defaults to `DEFAULTS.tlsMinVersion`. */
  context?: CertContextOptions;
  /**
   * 48 secret bytes for session ticket encryption, shared by every context
   * and kept across reloads so resumption survives both (random if absent).
   * Pass the same value to every worker to resume across workers.
   */
  ticketKeys?: Buffer;
}

/**
 * The store options a listener's TLS settings call for: one builder for
 * `l4lb check` and for serving, so both accept and refuse alike.
 */
export function certStoreOptions(model: ListenerTlsModel): CertStoreOptions {
  return {
    ...(model.clientCa !== null ? { clientCa: model.clientCa } : {}),
    context: {
      minVersion: model.minVersion,
      ...(model.ciphers !== null ? { ciphers: model.ciphers } : {}),
      // No stateless tickets (TLS 1.2 and 1.3); TLS 1.3 then sends only
      // session ids, which nothing here resumes: no resumption at all.
      ...(model.sessionTickets ? {} : { secureOptions: cryptoConstants.SSL_OP_NO_TICKET }),
    },
  };
}

/** Result of {@link loadCertificates} and {@link CertStore.reload}. */
export type CertLoadResult =
  | { ok: true; store: CertStore; warnings: string[] }
  | { ok: false; problems: CertProblem[]; warnings: string[] };

const TICKET_KEY_BYTES = 48;

/**
 * Loaded certificates and their contexts. Immutable: {@link reload} builds a
 * new store and leaves this one serving until the caller swaps references,
 * so open connections and in-flight handshakes are never disturbed.
 */
export class CertStore {
  /** In configuration order; `certificates[0]` is the default. */
  readonly certificates: readonly CertInfo[];
  readonly loadedAt: Date;
  readonly #entries: readonly CertEntry[];
  readonly #options: CertStoreOptions;
  // #private so that util.inspect/JSON of a store can never show secrets.
  readonly #ticketKeys: Buffer;
  readonly #contextOptions: tls.SecureContextOptions;
  readonly #defaultPems: { cert: Buffer; key: Buffer };
  readonly #exact = new Map<string, CertInfo>();
  readonly #wildcard = new Map<string, CertInfo>();

  /** @internal Use {@link loadCertificates}. */
  constructor(init: {
    certificates: CertInfo[];
    entries: readonly CertEntry[];
    options: CertStoreOptions;
    ticketKeys: Buffer;
    contextOptions: tls.SecureContextOptions;
    defaultPems: { cert: Buffer; key: Buffer };
    warnings: string[];
  }) {
    const { certificates, warnings } = init;
    if (certificates.length === 0) throw new RangeError('CertStore needs at least one certificate');
    this.certificates = Object.freeze(certificates);
    this.#entries = init.entries;
    this.#options = init.options;
    this.#ticketKeys = init.ticketKeys;
    this.#contextOptions = init.contextOptions;
    this.#defaultPems = init.defaultPems;
    this.loadedAt = new Date();
    for (const info of certificates) {
      for (const name of info.names) {
        const [table, key] = name.startsWith('*.') ? [this.#wildcard, name.slice(2)] : [this.#exact, name];
        const owner = table.get(key);
        if (owner === undefined) table.set(key, info);
        else warnings.push(`certs[${info.index}].cert: name ${name} is already served by certs[${owner.index}]; the first one wins`);
      }
    }
  }

  /** The default certificate (the first configured). */
  get default(): CertInfo {
    return this.certificates[0] as CertInfo;
  }

  /** The certificate served for `serverName` (null: no SNI → the default). */
  certificateFor(serverName: string | null): CertInfo {
    if (serverName === null || serverName === '') return this.default;
    return this.match(serverName) ?? this.default;
  }

  /** The certificate whose names cover `serverName` (exact, then wildcard), or null: no default here (`strict_sni`). */
  match(serverName: string): CertInfo | null {
    const name = normaliseServerName(serverName);
    const exact = this.#exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    // One label only: "x.a.test" → "a.test"; an empty first label never matches.
    if (dot > 0) {
      const wild = this.#wildcard.get(name.slice(dot + 1));
      if (wild !== undefined) return wild;
    }
    return null;
  }

  /** The SecureContext to use for `serverName`; suitable for an `SNICallback`. */
  contextFor(serverName: string | null): tls.SecureContext {
    return this.certificateFor(serverName).context;
  }

  /**
   * Makes `server` serve this store's default certificate (with the same
   * options) to handshakes without SNI; a `tls.Server` has its own context for
   * those and never calls its `SNICallback`. Use it with
   * `SNICallback: (name, cb) => cb(null, current.contextFor(name))`, and call
   * it again after each successful reload. Only new handshakes are affected.
   *
   * A `tls.Server` fed with `server.emit('connection', socket)` is the way
   * to wrap accepted sockets: unlike a bare `new tls.TLSSocket(..., { isServer })`
   * it enforces `requestCert`/`rejectUnauthorized` (mutual TLS).
   * Node keeps the PEM it is given as `server.key`: never log the server object.
   */
  applyTo(server: tls.Server): void {
    server.setSecureContext({ ...this.#contextOptions, cert: this.#defaultPems.cert, key: this.#defaultPems.key });
  }

  /**
   * Re-reads the same files with the same options (and ticket keys). This
   * store is untouched either way; on success swap to the returned one.
   */
  reload(): Promise<CertLoadResult> {
    return loadWith(this.#entries, this.#options, this.#ticketKeys);
  }
}

/**
 * Reads and checks every certificate/key pair and builds their contexts.
 *
 * Problems (the set is unusable): unreadable or missing file (message names
 * the path), no PEM certificate, unusable or encrypted key, key not matching
 * the certificate, bad client CA, context options OpenSSL rejects.
 * Warnings (served anyway): expired or not yet valid certificates, names
 * shadowed by an earlier certificate, certificates without usable DNS names.
 */
export function loadCertificates(entries: readonly CertEntry[], options: CertStoreOptions = {}): Promise<CertLoadResult> {
  const keys = options.ticketKeys;
  if (keys !== undefined && keys.length !== TICKET_KEY_BYTES) {
    return Promise.resolve({
      ok: false,
      problems: [{ index: null, field: 'options', path: '', message: `ticketKeys must be ${TICKET_KEY_BYTES} bytes` }],
      warnings: [],
    });
  }
  return loadWith(entries, options, keys ?? randomBytes(TICKET_KEY_BYTES));
}

async function loadWith(entries: readonly CertEntry[], options: CertStoreOptions, ticketKeys: Buffer): Promise<CertLoadResult> {
  const problems: CertProblem[] = [];
  const warnings: string[] = [];
  const now = Date.now();
  if (entries.length === 0) {
    problems.push({ index: null, field: 'cert', path: 'certs', message: 'at least one certificate is required' });
    return { ok: false, problems, warnings };
  }

  let clientCa: Buffer | undefined;
  if (options.clientCa !== undefined) {
    const path = options.clientCa;
    const add = (message: string): void => {
      problems.push({ index: null, field: 'client_ca', path: 'client_ca', message });
    };
    const read = await readPem(path, 'client CA file');
    if (typeof read === 'string') add(read);
    else {
      const parsed = parseCertificates(read, path, 'client CA file');
      if (typeof parsed === 'string') add(parsed);
      else {
        parsed.forEach((ca, i) => validityWarnings(ca, now, `client_ca: CA certificate ${i + 1} in ${path}`, warnings));
        clientCa = read;
      }
    }
  }

  // Files are read concurrently; problems and warnings are merged in entry order.
  const results = await Promise.all(entries.map((entry, index) => loadPair(entry, index, now)));
  for (const r of results) {
    problems.push(...r.problems);
    warnings.push(...r.warnings);
  }
  const loaded = results.map((r) => r.pair);
  if (problems.length > 0) {
    for (const pair of loaded) pair?.keyPem.fill(0);
    return { ok: false, problems, warnings };
  }

  const contextOptions: tls.SecureContextOptions = {
    minVersion: DEFAULTS.tlsMinVersion,
    honorCipherOrder: true,
    // OpenSSL fails resumption outright when client certificates are
    // requested and the context has no session id context (see
    // SSL_CTX_set_session_id_context(3)); a tls.Server sets one on its own
    // context, these contexts may be used without one. It names the client
    // CA too: a session is resumed only under the client-certificate policy
    // it was made under. Ticket keys outlive reloads, and a ticket issued
    // without client_ca would otherwise resume once client_ca is added,
    // with no certificate at all (measured: TLS 1.3 does).
    sessionIdContext: sessionIdContext(clientCa),
    ...options.context,
    ticketKeys,
    ...(clientCa !== undefined ? { ca: clientCa } : {}),
  };
  const infos: CertInfo[] = [];
  const optionMessages = new Set<string>();
  for (const pair of loaded) {
    if (pair === null) continue; // unreachable: a null pair always comes with a problem
    try {
      const context = tls.createSecureContext({ ...contextOptions, cert: pair.certPem, key: pair.keyPem });
      infos.push({ ...pair.info, context });
    } catch (err) {
      // Certificate and key were already checked, so this is about the options.
      optionMessages.add(`cannot create a TLS context: ${safeReason(err)}`);
    }
  }
  for (const message of optionMessages) problems.push({ index: null, field: 'options', path: '', message });
  const first = loaded[0];
  // Keys are no longer needed, except the default's, for applyTo().
  for (const pair of loaded) if (pair !== first || problems.length > 0) pair?.keyPem.fill(0);
  if (problems.length > 0 || first == null) return { ok: false, problems, warnings };
  const store = new CertStore({
    certificates: infos,
    entries: [...entries],
    options,
    ticketKeys,
    contextOptions,
    defaultPems: { cert: first.certPem, key: first.keyPem },
    warnings,
  });
  return { ok: true, store, warnings };
}

/** The session id context of a certificate set: one value per client CA bundle (or none). */
function sessionIdContext(clientCa: Buffer | undefined): string {
  if (clientCa === undefined) return 'l4lb';
  // At most 32 bytes (SSL_MAX_SID_CTX_LENGTH).
  return createHash('sha256').update('l4lb client_ca\0').update(clientCa).digest('hex').slice(0, 32);
}
