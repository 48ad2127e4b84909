#!/usr/bin/env -S node --initial-old-space-size=64
// --initial-old-space-size: with Node 20's defaults, a heap just above V8's 8 MB
// marking threshold (l4lb's, at rest) makes V8 run a full mark-compact every
// ~40 ms while data streams through, for the Buffers it promotes: 40% less
// single-stream throughput than a bare Node proxy, CPU per GB doubled. A 64 MB
// starting limit removes that (measured: benchmarks/README.md, "Heap flag").
// Not allowed in NODE_OPTIONS, hence here; `node bin/l4lb.js` runs without it.
// Entry point: the compiled CLI (built by `npm ci` through the prepare script).
//
// `run` catches SIGHUP/SIGTERM/SIGINT before anything else loads: loading the
// CLI and its dependencies takes a noticeable time, and Node's default for
// SIGHUP is to die. The signals module imports nothing, so this costs ~1 ms;
// what arrives is remembered until `run` can act (see src/runtime/signals.ts).
if (process.argv[2] === 'run') {
  const { catchSignals } = await import('../dist/runtime/signals.js');
  catchSignals();
}
const { main } = await import('../dist/cli/main.js');

main(process.argv);
