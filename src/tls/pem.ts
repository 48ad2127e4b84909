/**
 * Certificate and key files: reading PEM (through the secret-file seam),
 * parsing X.509 chains and private keys, and the checks a pair must pass
 * before a TLS context is built from it (key matches certificate, validity,
 * DNS names). Problems are returned as messages naming the file, never
 * thrown; key bytes never appear in them (see {@link safeReason}).
 */
import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readSecretFile, readSecretFileSync } from '../config/secret-file.js';
import { isValidDnsName, normaliseServerName } from './server-name.js';

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

/** What is known about one loaded certificate, before a TLS context is built from it. */
export interface CertFacts {
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
}

/** PEM files larger than this are certainly not a certificate or key. */
export const MAX_PEM_BYTES = 1024 * 1024;
const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** A certificate/key pair that passed every check: its facts and PEM bytes (the key to be zeroed after use). */
export interface LoadedPair {
  info: CertFacts;
  certPem: Buffer;
  keyPem: Buffer;
}

/**
 * Reads and checks one `certs[index]` pair. Both files are read even when
 * one fails, so every problem is reported at once.
 */
export async function loadPair(
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
