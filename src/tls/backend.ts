/** TLS from l4lb to a pool's servers: options built once per pool, used for every connection. */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { PoolTlsModel } from '../config/model.js';

/**
 * Connection options for `tls.connect({ socket, ...options })`. Files are
 * read here, once (at start and on reload), never per connection.
 */
export function backendTlsOptions(model: PoolTlsModel): tls.ConnectionOptions {
  const secureContext = tls.createSecureContext({
    minVersion: 'TLSv1.2',
    ...(model.ca !== null ? { ca: readFileSync(model.ca) } : {}),
    ...(model.cert !== null ? { cert: readFileSync(model.cert) } : {}),
    ...(model.key !== null ? { key: readFileSync(model.key) } : {}),
  });
  return {
    secureContext,
    rejectUnauthorized: model.verify,
    ...(model.servername !== null ? { servername: model.servername } : {}),
  };
}
