#!/usr/bin/env node
// Node backends for load.js (run.js uses c/backend.c), in a process of their
// own so that the proxy under test never shares an event loop with them.
// Prints {"sink":N,"source":N,"echo":N} (the ports) on stdout once all three
// listen on 127.0.0.1.
//
//   sink:   counts what the client sends; on the client's FIN it answers with
//           the count (8 bytes, big-endian) and closes. Used for upload.
//   source: reads an 8-byte big-endian byte count, sends that many bytes
//           (with backpressure), then closes. Used for download.
//   echo:   writes back whatever it reads. Used for the small request/response tests.
import net from 'node:net';

const CHUNK = Buffer.alloc(256 * 1024, 'x');

function sink(socket) {
  let count = 0;
  socket.on('data', (data) => {
    count += data.length;
  });
  socket.on('end', () => {
    const reply = Buffer.alloc(8);
    reply.writeBigUInt64BE(BigInt(count));
    socket.end(reply);
  });
  socket.on('error', () => socket.destroy());
}

function source(socket) {
  let header = Buffer.alloc(0);
  let left = -1;
  const pump = () => {
    // Write until the socket pushes back or the quota is sent; 'drain' resumes.
    while (left > 0 && !socket.destroyed) {
      const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= chunk.length;
      if (left === 0) {
        socket.end(chunk);
        return;
      }
      if (!socket.write(chunk)) return;
    }
  };
  socket.on('data', (data) => {
    if (left >= 0) return; // requests after the first are ignored
    header = Buffer.concat([header, data]);
    if (header.length < 8) return;
    left = Number(header.readBigUInt64BE(0));
    if (left === 0) socket.end();
    pump();
  });
  socket.on('drain', pump);
  socket.on('error', () => socket.destroy());
}

function echo(socket) {
  socket.setNoDelay(true);
  socket.on('data', (data) => socket.write(data));
  socket.on('error', () => socket.destroy());
}

function listen(handler, options = {}) {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ ...options, noDelay: true }, handler);
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => resolve(server.address().port));
  });
}

const ports = {
  // The sink must still write its count after the client's FIN.
  sink: await listen(sink, { allowHalfOpen: true }),
  source: await listen(source),
  echo: await listen(echo),
};
console.log(JSON.stringify(ports));
