#!/usr/bin/env node
// The entry point: the compiled CLI (built by `npm ci` through the prepare
// script). Run it through bin/l4lb, which picks the Node.js this
// installation brings and adds --initial-old-space-size=64: with V8's
// defaults, a heap just above its 8 MB marking threshold (l4lb's, at rest)
// makes it run a full mark-compact every ~40 ms while data streams through,
// for the Buffers it promotes (measured: benchmarks/README.md, "Heap flag").
// `node bin/l4lb.js` (how the tests run it) works too, without the flag.
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
