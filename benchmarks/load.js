#!/usr/bin/env node
// A Node load generator: runs one scenario against one port (of backend.js,
// or of a proxy in front of it) and prints one JSON line with the result.
// run.js uses the C load generator (c/loadgen.c) instead; this one is kept for
// profiling on a machine without a C compiler.
//
//   node benchmarks/load.js upload   --port P --duration MS --mbytes N
//   node benchmarks/load.js download --port P --duration MS --mbytes N
//   node benchmarks/load.js connect  --port P --duration MS --concurrency C
//   node benchmarks/load.js latency  --port P --duration MS --concurrency C
import net from 'node:net';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: 'string' },
    duration: { type: 'string', default: '3000' },
    mbytes: { type: 'string', default: '512' },
    concurrency: { type: 'string', default: '16' },
  },
});
const scenario = positionals[0];
const port = Number(values.port);
const durationMs = Number(values.duration);
const maxBytes = Number(values.mbytes) * 1024 * 1024;
const concurrency = Number(values.concurrency);
const HOST = '127.0.0.1';
const MB = 1024 * 1024;

// Whatever happens, this process ends: run.js also kills it, this is the second fence.
setTimeout(() => fail(new Error(`${scenario}: no result after ${durationMs + 15_000} ms`)), durationMs + 15_000).unref();

function fail(err) {
  console.error(`load.js: ${err.message}`);
  process.exit(1);
}

function connect() {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: HOST, noDelay: true });
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** One connection streams up to maxBytes (or for durationMs) to the sink; the sink's count over the time to its answer. */
async function upload() {
  const socket = await connect();
  const chunk = Buffer.alloc(256 * 1024, 'u');
  const started = performance.now();
  const deadline = started + durationMs;
  let sent = 0;
  return new Promise((resolve, reject) => {
    let reply = Buffer.alloc(0);
    socket.on('error', reject);
    socket.on('data', (data) => {
      reply = Buffer.concat([reply, data]);
    });
    socket.on('end', () => {
      if (reply.length < 8) return reject(new Error('sink closed without a count'));
      const seconds = (performance.now() - started) / 1000;
      const received = Number(reply.readBigUInt64BE(0));
      if (received !== sent) return reject(new Error(`sink counted ${received} of ${sent} bytes`));
      resolve({ mbps: received / MB / seconds, bytes: received, seconds });
    });
    const pump = () => {
      // Checking the clock every chunk is cheap next to a 256 KiB write.
      while (sent < maxBytes && performance.now() < deadline) {
        sent += chunk.length;
        if (!socket.write(chunk)) return;
      }
      socket.removeListener('drain', pump);
      socket.end();
    };
    socket.on('drain', pump);
    pump();
  });
}

/** The source sends up to maxBytes; we count what arrives until it ends or durationMs passes. */
async function download() {
  const socket = await connect();
  const started = performance.now();
  let received = 0;
  return new Promise((resolve, reject) => {
    const finish = () => {
      clearTimeout(timer);
      const seconds = (performance.now() - started) / 1000;
      socket.destroy();
      resolve({ mbps: received / MB / seconds, bytes: received, seconds });
    };
    const timer = setTimeout(finish, durationMs);
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('data', (data) => {
      received += data.length;
    });
    socket.on('end', finish);
    const request = Buffer.alloc(8);
    request.writeBigUInt64BE(BigInt(maxBytes));
    socket.write(request);
  });
}

/**
 * `concurrency` workers, each in a loop: connect, send 16 bytes, read the
 * 16-byte echo, close, and wait for the close before the next connection.
 */
async function connectRate() {
  const request = Buffer.alloc(16, 'c');
  const deadline = performance.now() + durationMs;
  let done = 0;
  let errors = 0;
  const once = () =>
    new Promise((resolve) => {
      let got = 0;
      let ok = false;
      const socket = net.connect({ port, host: HOST, noDelay: true });
      socket.on('connect', () => socket.write(request));
      socket.on('data', (data) => {
        got += data.length;
        if (got >= request.length && !ok) {
          ok = true;
          socket.end();
        }
      });
      socket.on('error', () => {});
      socket.on('close', () => {
        if (ok) done++;
        else errors++;
        resolve();
      });
    });
  const worker = async () => {
    while (performance.now() < deadline) await once();
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  if (done === 0) throw new Error(`no connection completed (${errors} errors)`);
  return { cps: done / seconds, connections: done, errors, seconds };
}

/**
 * `concurrency` persistent connections, each sending 64 bytes and waiting for
 * the 64-byte echo before the next; every round trip is timed.
 */
async function latency() {
  const request = Buffer.alloc(64, 'l');
  const samples = new Float64Array(4 * 1024 * 1024); // µs; recording stops when full
  let count = 0;
  let total = 0;
  const sockets = await Promise.all(Array.from({ length: concurrency }, connect));
  const started = performance.now();
  const deadline = started + durationMs;
  const run = (socket) =>
    new Promise((resolve, reject) => {
      let got = 0;
      let sentAt = 0;
      const send = () => {
        got = 0;
        sentAt = performance.now();
        socket.write(request);
      };
      socket.on('error', reject);
      socket.on('data', (data) => {
        got += data.length;
        if (got < request.length) return;
        const now = performance.now();
        if (count < samples.length) samples[count++] = (now - sentAt) * 1000;
        total++;
        if (now < deadline) send();
        else resolve();
      });
      send();
    });
  await Promise.all(sockets.map(run));
  const seconds = (performance.now() - started) / 1000;
  for (const s of sockets) s.destroy();
  const sorted = samples.subarray(0, count).sort();
  const pct = (p) => sorted[Math.min(count - 1, Math.floor((p / 100) * count))];
  return { rps: total / seconds, p50_us: pct(50), p99_us: pct(99), requests: total, seconds };
}

const scenarios = { upload, download, connect: connectRate, latency };
if (!scenarios[scenario] || !(port > 0)) fail(new Error(`usage: load.js ${Object.keys(scenarios).join('|')} --port P ...`));
scenarios[scenario]().then(
  (result) => {
    console.log(JSON.stringify({ scenario, ...result }));
    process.exit(0);
  },
  (err) => fail(err),
);
