#!/usr/bin/env node
// One soak backend, in a process of its own so the harness can SIGKILL it.
//
//   node backend.js NAME PORT [--tls CERT KEY]
//
// Speaks the soak protocol (lib/protocol.js): reads the header, checks the
// client's bytes, sends the generated reply with random chunk sizes and
// pauses, and applies the stream's planned fault (reset, stop reading). A
// health probe ("PING") gets "PONG". SIGUSR1 turns it into a black hole
// (accepts, never reads nor answers, probes included), SIGUSR2 back.
// Reports one JSON line per event on stdout (a pipe: written synchronously,
// so a line written before a SIGKILL is not lost):
//   {"t":"listening"} | {"t":"accept","id"} | {"t":"up","id","verdict","bytes"}
//   | {"t":"abort","id","bytes"} | {"t":"garbage"}
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { Generator, Verifier, HEADER_BYTES, MODES, ORDERS, decodeHeader, prng } from './lib/protocol.js';

const [name, portText, tlsFlag, certFile, keyFile] = process.argv.slice(2);
const port = Number(portText);
const secureContext = tlsFlag === '--tls' ? tls.createSecureContext({ cert: readFileSync(certFile), key: readFileSync(keyFile) }) : null;
let blackhole = false;
const held = new Set();
process.on('SIGUSR1', () => (blackhole = true));
process.on('SIGUSR2', () => {
  blackhole = false;
  for (const s of held) s.destroy();
  held.clear();
  // Also end the streams that stopped reading on purpose: the run is over.
  for (const s of stalled) s.destroy();
  stalled.clear();
});
const stalled = new Set();

// Orphaned (the harness itself was killed): leave rather than linger.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 1000).unref();

const report = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function serve(raw, socket) {
  let head = Buffer.alloc(0);
  let stream = null;
  const onData = (chunk) => {
    if (stream !== null) return stream.data(chunk);
    head = Buffer.concat([head, chunk]);
    if (head.length >= 4 && head.subarray(0, 4).toString('latin1') === 'PING') {
      socket.end('PONG\r\n');
      return;
    }
    if (head.length < HEADER_BYTES) return;
    const h = decodeHeader(head);
    if (h === null) {
      report({ t: 'garbage' });
      socket.destroy();
      return;
    }
    stream = new Stream(h, raw, socket);
    const rest = head.subarray(HEADER_BYTES);
    if (rest.length > 0) stream.data(rest);
  };
  socket.on('data', onData);
  socket.on('end', () => {
    if (stream !== null) stream.clientEnded();
    else socket.end();
  });
  socket.on('error', () => {});
  socket.on('close', () => stream?.closed());
}

class Stream {
  constructor(h, raw, socket) {
    this.h = h;
    this.raw = raw;
    this.s = socket;
    this.rand = prng(h.seed ^ 0x5eed);
    this.check = new Verifier(h.seed, 'up', h.up);
    this.gen = new Generator(h.seed, 'down');
    this.sent = 0;
    this.gotEnd = false;
    this.reported = false;
    this.stalled = false;
    report({ t: 'accept', id: h.id });
    socket.on('drain', () => this.pump());
    this.pump();
  }
  data(chunk) {
    if (this.stalled) return;
    this.check.push(chunk);
    if (this.h.mode === MODES.stall && this.check.bytes >= this.h.faultAt) {
      // Stop reading for good: the client's writes back up through l4lb.
      this.stalled = true;
      this.s.pause();
      stalled.add(this.s);
      this.s.once('close', () => stalled.delete(this.s));
      return;
    }
    this.maybeReset();
    if (this.h.pauses && !this.s.isPaused() && this.rand.chance(0.02)) {
      this.s.pause();
      setTimeout(() => this.s.resume(), this.rand.int(20, 300));
    }
  }
  maybeReset() {
    if (this.h.mode === MODES.reset && this.check.bytes + this.sent >= this.h.faultAt && !this.raw.destroyed) {
      // Reported on its own: the up direction may have been reported complete already.
      report({ t: 'reset', id: this.h.id });
      this.finish('reset');
      this.raw.resetAndDestroy();
    }
  }
  pump() {
    const s = this.s;
    while (this.sent < this.h.down && !s.destroyed && !this.waiting) {
      const n = Math.min(this.h.down - this.sent, this.rand.int(1, 64 * 1024));
      this.sent += n;
      const ok = s.write(this.gen.next(n));
      this.maybeReset();
      if (this.h.pauses && this.rand.chance(0.01)) {
        this.waiting = true;
        setTimeout(() => {
          this.waiting = false;
          this.pump();
        }, this.rand.int(20, 200));
        return;
      }
      if (!ok) return;
    }
    if (this.sent >= this.h.down) this.maybeEnd();
  }
  maybeEnd() {
    if (this.ended || this.s.destroyed) return;
    if (this.h.order === ORDERS.client_first && !this.gotEnd) return;
    this.ended = true;
    this.s.end();
  }
  clientEnded() {
    this.gotEnd = true;
    this.finish(this.check.verdict());
    if (this.sent >= this.h.down) this.maybeEnd();
  }
  finish(verdict) {
    if (this.reported) return;
    this.reported = true;
    report({ t: 'up', id: this.h.id, verdict, bytes: this.check.bytes });
  }
  closed() {
    if (!this.reported) {
      this.reported = true;
      report({ t: 'abort', id: this.h.id, bytes: this.check.bytes });
    }
  }
}

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (raw) => {
  if (blackhole) {
    // Accepted and never answered: held until the black hole ends.
    held.add(raw);
    raw.on('error', () => {});
    raw.on('close', () => held.delete(raw));
    raw.pause();
    return;
  }
  raw.on('error', () => {});
  if (secureContext === null) return serve(raw, raw);
  const socket = new tls.TLSSocket(raw, { isServer: true, secureContext, allowHalfOpen: true });
  socket.on('error', () => raw.destroy());
  socket.on('secure', () => serve(raw, socket));
});
server.listen({ port, host: '127.0.0.1', backlog: 1024 }, () => report({ t: 'listening', name, port }));
server.on('error', (err) => {
  process.stderr.write(`${name}: ${err.message}\n`);
  process.exit(2);
});
