#!/usr/bin/env node
// Builds the C load generator and backend (benchmarks/c/) with the system's C
// compiler into benchmarks/c/build/ (git-ignored): on first use, and again
// whenever a source is newer than its binary. `CC` names another compiler.
// The load generator links OpenSSL for the TLS scenarios when its headers are
// there (Debian: libssl-dev); without them it is built without TLS and says so.
//
//   node benchmarks/lib/ctools.js      # build if needed, print {"backend":..,"loadgen":..,"tls":..}
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../c/', import.meta.url));
export const BUILD_DIR = join(SRC, 'build');
const FLAGS = ['-O2', '-std=gnu11', '-Wall', '-Wextra'];

/** Thrown when there is no C compiler; the message says what to install. */
export class NoCompilerError extends Error {}

function compilerName() {
  return process.env.CC || 'cc';
}

/** The compiler's first version line, or null when there is none. */
export function compilerVersion() {
  const r = spawnSync(compilerName(), ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? r.stdout.split('\n')[0].trim() : null;
}

function mtime(file) {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

/** Compile `sources` to `out` (written under a temporary name, then renamed: a concurrent build never sees half a file). */
function compile(sources, out, extra = []) {
  const tmp = `${out}.${process.pid}.tmp`;
  const r = spawnSync(compilerName(), [...FLAGS, '-o', tmp, ...sources.map((s) => join(SRC, s)), ...extra], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    return { ok: false, output: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim() };
  }
  renameSync(tmp, out);
  return { ok: true };
}

function features(loadgen) {
  const r = spawnSync(loadgen, ['features'], { encoding: 'utf8', timeout: 10_000 });
  try {
    return JSON.parse(r.stdout);
  } catch {
    return null;
  }
}

/**
 * Build what is missing or stale; returns { backend, loadgen, tls, openssl,
 * tlsMissing, cc } (paths of the binaries; tls: whether the load generator
 * can run the TLS scenarios, and if not, why). Throws NoCompilerError without
 * a compiler, and an Error with the compiler's output if a build fails.
 */
export function buildTools() {
  const backend = join(BUILD_DIR, 'backend');
  const loadgen = join(BUILD_DIR, 'loadgen');
  const common = mtime(join(SRC, 'common.h'));
  const stale = (bin, src) => mtime(bin) < Math.max(common, mtime(join(SRC, src)));
  let feats = stale(loadgen, 'loadgen.c') ? null : features(loadgen);
  // A binary built without TLS is rebuilt while OpenSSL might have been installed since.
  const needLoadgen = feats === null || !feats.tls;
  const needBackend = stale(backend, 'backend.c');
  let cc = null;
  let tlsMissing = null;
  if (needLoadgen || needBackend) {
    cc = compilerVersion();
    if (cc === null) {
      throw new NoCompilerError(
        `no C compiler: the benchmark builds its load generator and backend from benchmarks/c/ with \`${compilerName()}\` ` +
          '(set CC to use another). Install one, e.g. `apt-get install gcc libc6-dev libssl-dev`.',
      );
    }
    mkdirSync(BUILD_DIR, { recursive: true });
  }
  if (needBackend) {
    const r = compile(['backend.c'], backend);
    if (!r.ok) throw new Error(`building benchmarks/c/backend.c failed:\n${r.output}`);
  }
  if (needLoadgen) {
    let r = compile(['loadgen.c'], loadgen, ['-DWITH_TLS', '-lssl', '-lcrypto']);
    if (!r.ok) {
      tlsMissing = /openssl\/|-lssl|-lcrypto/.test(r.output)
        ? 'OpenSSL headers or libraries not found (Debian: apt-get install libssl-dev)'
        : `the build with OpenSSL failed: ${r.output.split('\n')[0]}`;
      r = compile(['loadgen.c'], loadgen);
      if (!r.ok) throw new Error(`building benchmarks/c/loadgen.c failed:\n${r.output}`);
    }
    feats = features(loadgen);
    if (feats === null) throw new Error(`${loadgen} does not run`);
  }
  if (!feats.tls && tlsMissing === null) tlsMissing = 'built without OpenSSL';
  return { backend, loadgen, tls: feats.tls, openssl: feats.openssl ?? null, tlsMissing: feats.tls ? null : tlsMissing, cc: cc ?? compilerVersion() };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    console.log(JSON.stringify(buildTools()));
  } catch (err) {
    console.error(err.message);
    process.exit(err instanceof NoCompilerError ? 3 : 1);
  }
}
