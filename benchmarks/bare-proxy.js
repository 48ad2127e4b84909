#!/usr/bin/env node
// The floor: the least a Node TCP proxy can do. One process, one listener,
// pipe() both ways, nothing else. l4lb is measured against this in the same run.
// With CERT and KEY it terminates TLS first (tls.createServer), the floor for
// the TLS scenarios.
//
//   node benchmarks/bare-proxy.js LISTEN_PORT BACKEND_PORT [CERT KEY]   (port 0 = any free port)
//
// Prints {"port":N} on stdout once listening.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

const listenPort = Number(process.argv[2] ?? 0);
const backendPort = Number(process.argv[3]);
const [certFile, keyFile] = process.argv.slice(4);
if (!Number.isInteger(backendPort) || backendPort <= 0 || (certFile !== undefined && keyFile === undefined)) {
  console.error('usage: bare-proxy.js LISTEN_PORT BACKEND_PORT [CERT KEY]');
  process.exit(2);
}

// allowHalfOpen on both sides, so a client's FIN reaches the backend while the
// reply still flows back (the upload test needs it, and so does any real proxy).
const onClient = (client) => {
  const backend = net.connect({ port: backendPort, host: '127.0.0.1', allowHalfOpen: true });
  // Any error on either side ends both; pipe() ends the other side on a clean close.
  const destroyBoth = () => {
    client.destroy();
    backend.destroy();
  };
  client.on('error', destroyBoth);
  backend.on('error', destroyBoth);
  client.pipe(backend);
  backend.pipe(client);
};

const server =
  certFile === undefined
    ? net.createServer({ allowHalfOpen: true }, onClient)
    : tls.createServer({ allowHalfOpen: true, cert: readFileSync(certFile), key: readFileSync(keyFile) }, onClient);
server.on('tlsClientError', () => {});

server.listen(listenPort, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
