// Throw-away certificates for the TLS scenarios: one RSA 2048 and one ECDSA
// P-256, self-signed for bench.test, made with the openssl command line.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const KEYS = {
  rsa: ['-newkey', 'rsa:2048'],
  ecdsa: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
};

/** Writes DIR/{rsa,ecdsa}.{crt,key,pem} (pem: certificate then key, for HAProxy); returns their paths. */
export function makeCerts(dir) {
  const out = {};
  for (const [name, keyArgs] of Object.entries(KEYS)) {
    const cert = join(dir, `${name}.crt`);
    const key = join(dir, `${name}.key`);
    const r = spawnSync(
      'openssl',
      ['req', '-x509', ...keyArgs, '-nodes', '-sha256', '-days', '7', '-subj', '/CN=bench.test', '-addext', 'subjectAltName=DNS:bench.test', '-keyout', key, '-out', cert],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (r.status !== 0) throw new Error(`openssl req (${name}) failed: ${(r.stderr || String(r.error)).trim()}`);
    const pem = join(dir, `${name}.pem`);
    writeFileSync(pem, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'), { mode: 0o600 });
    out[name] = { cert, key, pem };
  }
  return out;
}
