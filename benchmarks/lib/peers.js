// HAProxy and NGINX for the benchmark: where they are, their versions, the
// OpenSSL they run on, and (NGINX) how to load the stream module from a
// configuration of our own. `L4LB_BENCH_HAPROXY` / `L4LB_BENCH_NGINX` name
// another binary (e.g. a newer build).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

function which(name, variable) {
  const override = process.env[variable];
  if (override) return existsSync(override) ? override : null;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

function run(bin, args) {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 10_000 });
  return { ok: r.status === 0, text: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** { path, version, openssl } or { missing: reason }. */
export function findHaproxy() {
  const bin = which('haproxy', 'L4LB_BENCH_HAPROXY');
  if (!bin) return { missing: 'haproxy not found (Debian package haproxy)' };
  const v = run(bin, ['-vv']);
  if (!v.ok) return { missing: `${bin} -vv failed: ${v.text.trim().split('\n')[0]}` };
  return {
    path: bin,
    version: /HAProxy version (\S+)/.exec(v.text)?.[1] ?? 'unknown',
    openssl: /Running on OpenSSL version : (.*)/.exec(v.text)?.[1]?.trim() ?? null,
  };
}

/**
 * { path, version, openssl, loadModule } or { missing: reason }. The stream
 * module is built in (`--with-stream`) or dynamic (Debian's
 * libnginx-mod-stream), then named by absolute path in our configuration.
 */
export function findNginx() {
  const bin = which('nginx', 'L4LB_BENCH_NGINX');
  if (!bin) return { missing: 'nginx not found (Debian packages nginx-light and libnginx-mod-stream)' };
  const v = run(bin, ['-V']);
  if (!v.ok) return { missing: `${bin} -V failed: ${v.text.trim().split('\n')[0]}` };
  const configure = /configure arguments:(.*)/.exec(v.text)?.[1] ?? '';
  let loadModule = '';
  if (!/(^|\s)--with-stream(\s|$)/.test(configure)) {
    const module = streamModule(configure);
    if (!module) return { missing: 'nginx has no stream module (Debian package libnginx-mod-stream)' };
    loadModule = `load_module ${module};`;
  }
  return {
    path: bin,
    version: /nginx version: nginx\/(\S+)/.exec(v.text)?.[1] ?? 'unknown',
    openssl: (/running with (OpenSSL [^\n]*)/.exec(v.text) ?? /built with (OpenSSL [^\n]*)/.exec(v.text))?.[1]?.trim() ?? null,
    loadModule,
  };
}

function streamModule(configure) {
  const prefix = /--prefix=(\S+)/.exec(configure)?.[1] ?? '/usr/share/nginx';
  const modulesPath = /--modules-path=(\S+)/.exec(configure)?.[1];
  const candidates = [];
  // What the distribution enables (/etc/nginx/modules-enabled/*.conf), relative to the prefix.
  for (const dir of ['/etc/nginx/modules-enabled', '/usr/share/nginx/modules-available']) {
    let files = [];
    try {
      files = readdirSync(dir).filter((f) => f.endsWith('.conf'));
    } catch {
      continue;
    }
    for (const f of files) {
      let text = '';
      try {
        text = readFileSync(join(dir, f), 'utf8');
      } catch {
        continue;
      }
      for (const m of text.matchAll(/^\s*load_module\s+(\S*ngx_stream_module\.so)\s*;/gm)) {
        candidates.push(isAbsolute(m[1]) ? m[1] : join(prefix, m[1]));
      }
    }
  }
  if (modulesPath) candidates.push(join(modulesPath, 'ngx_stream_module.so'));
  candidates.push('/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/share/nginx/modules/ngx_stream_module.so');
  return candidates.find((p) => existsSync(p)) ?? null;
}

/** The system's `openssl version`, or null. */
export function opensslVersion() {
  const v = run('openssl', ['version']);
  return v.ok ? v.text.trim() : null;
}
