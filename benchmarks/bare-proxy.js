#!/usr/bin/env node
// The floor: the least a Node TCP proxy can do. One process, one listener,
// pipe() both ways, nothing else. l4lb is measured against this in the same run.
//
//   node benchmarks/bare-proxy.js LISTEN_PORT BACKEND_PORT   (port 0 = any free port)
//
// Prints {"port":N} on stdout once listening.
import net from 'node:net';

const listenPort = Number(process.argv[2] ?? 0);
const backendPort = Number(process.argv[3]);
if (!Number.isInteger(backendPort) || backendPort <= 0) {
  console.error('usage: bare-proxy.js LISTEN_PORT BACKEND_PORT');
  process.exit(2);
}

// allowHalfOpen on both sides, so a client's FIN reaches the backend while the
// reply still flows back (the upload test needs it, and so does any real proxy).
const server = net.createServer({ allowHalfOpen: true }, (client) => {
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
});

server.listen(listenPort, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
