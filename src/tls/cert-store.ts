/**
 * Certificates for TLS termination (`listeners[].tls.certs`): loads and
 * checks PEM files, builds one `tls.SecureContext` per certificate, and picks
 * the context for a client's SNI.
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
import { X509Certificate, createHash, createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import tls from 'node:tls';
import { readSecretFile, readSecretFileSync } from '../config/secret-file.js';
import { isValidDnsName, normaliseServerName } from './client-hello.js';

/** One `tls.certs[]` entry: paths to a PEM certificate (chain) and its PEM private key. */
export interface CertEntry {
  cert: string;
  key: string;
}

/** A reason a certificate set cannot be used. */
export interface CertProblem {
  /** Index into the entries, or null for problems not tied to one entry. */
  index: number | null;
  field: 'cert' | 'key' | 'client_ca' | 'options';
  /** Config-relative path: `certs[1].key`, `client_ca`, or `` for context options. */
  path: string;
  /** Human-readable; names the file, never contains key material. */
  message: string;
}

/** Everything known about one loaded certificate. */
export interface CertInfo {
  index: number;
  certPath: string;
  keyPath: string;
  /** DNS names served, lower-cased: SAN DNS entries (wildcards included), else the subject CN. */
  names: readonly string[];
  subjectCN: string | null;
  validFrom: Date;
  validTo: Date;
  /** SHA-256 fingerprint of the leaf, colon-separated hex (as `X509Certificate.fingerprint256`). */
  fingerprint256: string;
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
  /** E.g. `{ minVersion: 'TLSv1.3', ciphers }`; `minVersion` defaults to TLSv1.2. */
  context?: CertContextOptions;
  /**
   * 48 secret bytes for session ticket encryption, shared by every context
   * and kept across reloads so resumption survives both (random if absent).
   * Pass the same value to every worker to resume across workers.
   */
  ticketKeys?: Buffer;
}

/** Result of {@link loadCertificates} and {@link CertStore.reload}. */
export type CertLoadResult =
  | { ok: true; store: CertStore; warnings: string[] }
  | { ok: false; problems: CertProblem[]; warnings: string[] };

/** PEM files larger than this are certainly not a certificate or key. */
export const MAX_PEM_BYTES = 1024 * 1024;
const TICKET_KEY_BYTES = 48;
const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

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
    minVersion: 'TLSv1.2',
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

interface LoadedPair {
  info: Omit<CertInfo, 'context'>;
  certPem: Buffer;
  keyPem: Buffer;
}

async function loadPair(
  entry: CertEntry,
  index: number,
  now: number,
): Promise<{ pair: LoadedPair | null; problems: CertProblem[]; warnings: string[] }> {
  const problems: CertProblem[] = [];
  const warnings: string[] = [];
  const pair = await checkPair(entry, index, now, problems, warnings);
  return { pair, problems, warnings };
}

async function checkPair(
  entry: CertEntry,
  index: number,
  now: number,
  problems: CertProblem[],
  warnings: string[],
): Promise<LoadedPair | null> {
  const certPath = `certs[${index}].cert`;
  const keyPath = `certs[${index}].key`;
  const certProblem = (message: string): null => {
    problems.push({ index, field: 'cert', path: certPath, message });
    return null;
  };
  const keyProblem = (message: string): null => {
    problems.push({ index, field: 'key', path: keyPath, message });
    return null;
  };

  // Read both files even when one fails, so every problem is reported at once.
  const [certRead, keyRead] = await Promise.all([readPem(entry.cert, 'certificate file'), readPem(entry.key, 'key file')]);

  let chain: X509Certificate[] | null = null;
  if (typeof certRead === 'string') certProblem(certRead);
  else {
    const parsed = parseCertificates(certRead, entry.cert, 'certificate file');
    if (typeof parsed === 'string') certProblem(parsed);
    else chain = parsed;
  }

  let key: KeyObject | null = null;
  if (typeof keyRead === 'string') keyProblem(keyRead);
  else {
    key = parsePrivateKey(keyRead, entry.key, keyProblem);
    if (key === null) keyRead.fill(0);
  }

  if (chain === null || key === null || typeof certRead === 'string' || typeof keyRead === 'string') {
    if (typeof keyRead !== 'string') keyRead.fill(0);
    return null;
  }
  const leaf = chain[0] as X509Certificate;
  if (!publicKeysEqual(leaf, key)) {
    keyRead.fill(0);
    return keyProblem(`private key in ${entry.key} does not match the certificate in ${entry.cert}`);
  }

  chain.forEach((c, i) => {
    const what = i === 0 ? `certificate ${entry.cert}` : `chain certificate ${i + 1} in ${entry.cert}`;
    validityWarnings(c, now, `${certPath}: ${what}`, warnings);
  });
  const subjectCN = commonName(leaf);
  const names = certificateNames(leaf, subjectCN);
  if (names.length === 0) {
    warnings.push(`${certPath}: certificate ${entry.cert} has no DNS names; it can only be served as the default`);
  }
  return {
    info: {
      index,
      certPath: entry.cert,
      keyPath: entry.key,
      names,
      subjectCN,
      validFrom: new Date(leaf.validFrom),
      validTo: new Date(leaf.validTo),
      fingerprint256: leaf.fingerprint256,
    },
    certPem: certRead,
    keyPem: keyRead,
  };
}

/** Reads a small file; a string is a problem message naming the path. */
export async function readPem(path: string, what: string): Promise<Buffer | string> {
  try {
    // Through the secret-file seam: after a privilege drop a root-only file yields the copy read at start.
    // A private copy: key bytes are zeroed after use here, the seam's kept copy must survive that.
    return Buffer.from(await readSecretFile(path, { maxBytes: MAX_PEM_BYTES }));
  } catch (err) {
    return readProblem(err, path, what);
  }
}

/** The synchronous form of {@link readPem}. */
export function readPemSync(path: string, what: string): Buffer | string {
  try {
    return Buffer.from(readSecretFileSync(path, { maxBytes: MAX_PEM_BYTES }));
  } catch (err) {
    return readProblem(err, path, what);
  }
}

function readProblem(err: unknown, path: string, what: string): string {
  const code = (err as { code?: unknown }).code;
  if (code === 'L4LB_SECRET_NOT_FILE') return `${what} ${path} is not a regular file`;
  if (code === 'L4LB_SECRET_TOO_LARGE') return `${what} ${path} is larger than ${MAX_PEM_BYTES} bytes; not a PEM file`;
  return `cannot read ${what} ${path}: ${errnoReason(err)}`;
}

/** The session id context of a certificate set: one value per client CA bundle (or none). */
function sessionIdContext(clientCa: Buffer | undefined): string {
  if (clientCa === undefined) return 'l4lb';
  // At most 32 bytes (SSL_MAX_SID_CTX_LENGTH).
  return createHash('sha256').update('l4lb client_ca\0').update(clientCa).digest('hex').slice(0, 32);
}

/** Every PEM certificate in `pem`, in order; a string is a problem message. */
export function parseCertificates(pem: Buffer, path: string, what: string): X509Certificate[] | string {
  const blocks = pem.toString('latin1').match(PEM_CERT_RE);
  if (blocks === null) return `${what} ${path} contains no PEM certificate (-----BEGIN CERTIFICATE-----)`;
  const certs: X509Certificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      certs.push(new X509Certificate(block));
    } catch (err) {
      return `${what} ${path}: certificate ${i + 1} cannot be parsed: ${safeReason(err)}`;
    }
  }
  return certs;
}

/** The private key in `pem`, or null after reporting why not to `problem` (no PEM key, encrypted, unparsable). */
export function parsePrivateKey(pem: Buffer, path: string, problem: (m: string) => null): KeyObject | null {
  const text = pem.toString('latin1');
  if (!/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)) {
    return problem(`key file ${path} contains no PEM private key`);
  }
  // No passphrase option exists; say so instead of OpenSSL's "bad decrypt".
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
    return problem(`key file ${path} is encrypted; l4lb needs an unencrypted key (protect it with file permissions)`);
  }
  try {
    return createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    return problem(`key file ${path} cannot be parsed: ${safeReason(err)}`);
  }
}

/** Whether `key` is the private key of `cert`. */
export function publicKeysEqual(cert: X509Certificate, key: KeyObject): boolean {
  const spki = { type: 'spki', format: 'der' } as const;
  try {
    return cert.publicKey.export(spki).equals(createPublicKey(key).export(spki));
  } catch {
    return false;
  }
}

/** Adds a warning for an expired or not yet valid certificate. */
export function validityWarnings(cert: X509Certificate, now: number, what: string, warnings: string[]): void {
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (to < now) warnings.push(`${what} expired on ${new Date(to).toISOString()}`);
  else if (from > now) warnings.push(`${what} is not valid before ${new Date(from).toISOString()}`);
}

/** The subject CN, if present and printed unquoted (quoted values carry odd characters). */
function commonName(cert: X509Certificate): string | null {
  for (const line of cert.subject.split('\n')) {
    if (line.startsWith('CN=') && !line.startsWith('CN="')) return line.slice(3);
  }
  return null;
}

/**
 * SAN DNS names (RFC 6125: when present, the CN is ignored), else the CN.
 * Only plain names and `*.name` wildcards are kept.
 */
function certificateNames(cert: X509Certificate, cn: string | null): string[] {
  const dns: string[] = [];
  // Node prints SANs as "DNS:a, DNS:b, IP Address:1.2.3.4"; values with odd
  // characters are JSON-quoted, and those are never valid DNS names anyway.
  for (const part of (cert.subjectAltName ?? '').split(', ')) {
    if (part.startsWith('DNS:') && !part.startsWith('DNS:"')) dns.push(part.slice(4));
  }
  const candidates = dns.length > 0 ? dns : cn !== null ? [cn] : [];
  const names: string[] = [];
  for (const raw of candidates) {
    const name = normaliseServerName(raw);
    const valid = name.startsWith('*.') ? isValidDnsName(name.slice(2)) : isValidDnsName(name);
    if (valid && !names.includes(name)) names.push(name);
  }
  return names;
}

function errnoReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    default:
      return code ?? safeReason(err);
  }
}

/**
 * An error's reason with anything that could be key material removed: PEM
 * blocks and long base64 or hex runs. OpenSSL reasons never contain such
 * things today; this keeps it so if one ever does.
 */
export function safeReason(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  const scrubbed = message
    .replace(/-----BEGIN[\s\S]*?(-----END[^-]*-----|$)/g, '[redacted]')
    .replace(/[A-Za-z0-9+/=]{32,}/g, '[redacted]')
    .slice(0, 200);
  return typeof code === 'string' && !scrubbed.includes(code) ? `${code} ${scrubbed}` : scrubbed;
}
