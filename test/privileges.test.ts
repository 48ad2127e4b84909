/**
 * After a privilege drop (`user:`): secret files read as root are kept, a
 * reload re-reads what the dropped user can read and serves the kept copy of
 * what it cannot (saying so, with the fix), and `run`/`check` name at start
 * exactly which files those are. Root only (CI runs as root): the tests switch
 * the effective user of this process for a moment, or start `l4lb run` as
 * root with `user: nobody`.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import tls from 'node:tls';
import {
  checkSecretReadable,
  readSecret,
  readSecretFile,
  readSecretSync,
  secretFiles,
  takeKeptReads,
} from '../src/config/secret-file.js';
import { buildModel } from '../src/config/load.js';
import { lookupUser, rereadReport } from '../src/runtime/privileges.js';
import { readLine } from './helpers/net.js';
import { backendFor } from './helpers/lb.js';
import { runCli, startCli, writeConfig } from './helpers/cli.js';
import { generateTestCerts } from './helpers/certs.js';
import { need } from './helpers/requirements.js';

const nobody = lookupUser('nobody');

function nobodyGroup(): string {
  return spawnSync('id', ['-gn', 'nobody'], { encoding: 'utf8' }).stdout.trim();
}

/** Root is needed to keep copies and to become another user: skip with the reason locally, fail in CI. */
function requireRoot(t: Test): boolean {
  return need(t, process.getuid?.() === 0 && nobody !== undefined ? null : nobody === undefined ? 'user nobody does not exist' : 'needs root to drop privileges');
}

/** Run `fn` with the effective identity of nobody (groups too), then return to root. */
async function asNobody<T>(fn: () => Promise<T> | T): Promise<T> {
  const groups = process.getgroups!();
  const egid = process.getegid!();
  process.setgroups!([nobody!.gid]);
  process.setegid!(nobody!.gid);
  process.seteuid!(nobody!.uid);
  try {
    return await fn();
  } finally {
    process.seteuid!(0);
    process.setegid!(egid);
    process.setgroups!(groups);
  }
}

/** A fresh directory everyone may search (mkdtemp's is 0700), removed at the end. */
function openDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'l4lb-priv-'));
  chmodSync(dir, 0o755);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function file(dir: string, name: string, content: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

t.test('a secret read as root is served from the copy kept at start once the dropped user may not read it, and the caller is told', async (t) => {
  if (!requireRoot(t)) return;
  const dir = openDir(t);
  const key = file(dir, 'root-only.key', 'version 1', 0o600);
  t.same((await readSecret(key)).kept, false, 'as root: read from the file');
  writeFileSync(key, 'version 2 (root-only, the user cannot see it)');
  takeKeptReads();
  const read = await asNobody(() => readSecret(key));
  t.equal(read.data.toString(), 'version 1', 'the copy read as root');
  t.equal(read.kept, true, 'the caller can tell');
  t.equal(read.stats?.uid, 0, 'the file status is still given where stat() is allowed');
  t.equal((await asNobody(() => readSecretFile(key))).toString(), 'version 1');
  t.same((await asNobody(() => readSecretSync(key))).kept, true, 'the synchronous read too');
  t.same(takeKeptReads(), [key], 'one entry per file, however often it was read');
  t.same(takeKeptReads(), [], 'and only once');
  await t.resolves(asNobody(() => checkSecretReadable(key)), 'the readability check accepts the kept copy');
});

t.test('a caller that zeroes the key bytes it was given (as cert-store does) cannot wipe the kept copy', async (t) => {
  if (!requireRoot(t)) return;
  const dir = openDir(t);
  const key = file(dir, 'zeroed.key', 'the key', 0o600);
  (await readSecretFile(key)).fill(0);
  const kept = await asNobody(() => readSecretFile(key));
  t.equal(kept.toString(), 'the key', 'the copy read as root is intact');
  kept.fill(0);
  t.equal((await asNobody(() => readSecretFile(key))).toString(), 'the key', 'and stays intact after a kept read is zeroed too');
  takeKeptReads();
});

t.test('after the drop a secret the user can read is read again: a new version takes effect', async (t) => {
  if (!requireRoot(t)) return;
  const dir = openDir(t);
  const cert = file(dir, 'readable.crt', 'version 1', 0o644);
  await readSecret(cert);
  writeFileSync(cert, 'version 2');
  const read = await asNobody(() => readSecret(cert));
  t.same({ data: read.data.toString(), kept: read.kept }, { data: 'version 2', kept: false });
  t.same(takeKeptReads(), [], 'nothing kept was used');
});

t.test('a root-only secret never read as root, or one that was removed, is an error rather than an old copy', async (t) => {
  if (!requireRoot(t)) return;
  const dir = openDir(t);
  const late = file(dir, 'late.key', 'x', 0o600);
  await t.rejects(asNobody(() => readSecret(late)), { code: 'EACCES', path: late }, 'a file first named after the drop');
  t.throws(() => readSecretSyncAs(late), { code: 'EACCES' });
  await t.rejects(asNobody(() => checkSecretReadable(late)), { code: 'EACCES' });
  // In a configuration (a reload after the drop): the problem names the user l4lb reads as.
  const raw = {
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }], tls: { ca: late } }],
  };
  await t.rejects(asNobody(() => buildModel(raw)), {
    problems: [{ path: 'pools[0].tls.ca', message: `cannot read ${late}: EACCES (not readable by user nobody, which l4lb runs as)` }],
  });
  const gone = file(dir, 'gone.key', 'x', 0o600);
  await readSecret(gone);
  rmSync(gone);
  await t.rejects(asNobody(() => readSecret(gone)), { code: 'ENOENT' }, 'a removed file is not served from memory');
  t.same(takeKeptReads(), []);
});

/** readSecretSync as nobody, synchronously (asNobody is async). */
function readSecretSyncAs(path: string): unknown {
  const groups = process.getgroups!();
  process.setgroups!([nobody!.gid]);
  process.setegid!(nobody!.gid);
  process.seteuid!(nobody!.uid);
  try {
    return readSecretSync(path);
  } finally {
    process.seteuid!(0);
    process.setegid!(0);
    process.setgroups!(groups);
  }
}

t.test('a directory, a FIFO and an oversized file are refused by name, without hanging', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l4lb-secret-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'sub'));
  await t.rejects(readSecretFile(join(dir, 'sub')), { code: 'L4LB_SECRET_NOT_FILE', message: /sub is not a regular file/ });
  t.throws(() => readSecretSync(join(dir, 'sub')), { code: 'L4LB_SECRET_NOT_FILE' });
  writeFileSync(join(dir, 'big'), Buffer.alloc(2048));
  await t.rejects(readSecretFile(join(dir, 'big'), { maxBytes: 1024 }), { code: 'L4LB_SECRET_TOO_LARGE', message: /larger than 1024 bytes/ });
  if (spawnSync('mkfifo', [join(dir, 'fifo')]).status === 0) {
    await t.rejects(readSecretFile(join(dir, 'fifo')), { code: 'L4LB_SECRET_NOT_FILE' }, 'a FIFO is refused, not waited on');
  }
  await t.rejects(readSecretFile(join(dir, 'missing')), { code: 'ENOENT' });
});

t.test('rereadReport names exactly the files the target user cannot read, tells a closed directory from a closed file, and returns to root', async (t) => {
  if (!requireRoot(t)) return;
  const dir = openDir(t);
  const closedDir = join(dir, 'closed');
  mkdirSync(closedDir, { mode: 0o700 });
  const token = file(dir, 'admin.token', 'tok3n\n', 0o600);
  const groupReadable = file(dir, 'group.key', 'k', 0o640);
  chownSync(groupReadable, 0, nobody!.gid);
  const config = file(dir, 'l4lb.json', '{}', 0o600);
  const model = await buildModel({
    user: 'nobody',
    admin: { listen: '127.0.0.1:0', token_file: token },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }] }],
  });
  // Pool TLS files: one in the closed directory (its own mode would allow reading), one group-readable.
  const inClosed = file(closedDir, 'ca.crt', 'ca', 0o644);
  const withTls = { ...model, pools: [{ ...model.pools[0]!, tls: { servername: null, ca: inClosed, verify: true, cert: null, key: groupReadable } }] };
  t.same(
    secretFiles(withTls).map((f) => f.path),
    ['admin.token_file', 'pools[0].tls.ca', 'pools[0].tls.key'],
  );
  const before = { euid: process.geteuid!(), egid: process.getegid!(), groups: process.getgroups!() };
  const report = rereadReport(withTls, config);
  t.same({ euid: process.geteuid!(), egid: process.getegid!(), groups: process.getgroups!() }, before, 'back to root, with root groups');
  t.ok(report?.known);
  if (!report?.known) return;
  t.equal(report.group, nobodyGroup(), "the group named in the fix: nobody's primary group");
  t.same(
    report.unreadable.map((u) => ({ path: u.path, file: u.file, error: u.error, directory: u.directory })),
    [
      { path: 'config', file: config, error: 'EACCES', directory: false },
      { path: 'admin.token_file', file: token, error: 'EACCES', directory: false },
      { path: 'pools[0].tls.ca', file: inClosed, error: 'EACCES', directory: true },
    ],
    'the group-readable key is not named; the closed directory is told apart',
  );
  t.equal(rereadReport({ ...withTls, user: null }, config), null, 'no user: nothing to report');
});

t.test('check with user: names each secret file the user cannot re-read, with the fix install.sh would apply', async (t) => {
  if (!requireRoot(t)) return;
  const dir = openDir(t);
  const token = file(dir, 'admin.token', 'tok3n\n', 0o600);
  const { file: config, cleanup } = writeConfig({
    user: 'nobody',
    admin: { listen: '127.0.0.1:0', token_file: token },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }] }],
  });
  t.teardown(cleanup);
  const r = runCli(['check', '--config', config]);
  t.equal(r.status, 0, 'a warning, not an error: the copy read at start still serves');
  const group = nobodyGroup();
  t.match(
    r.stderr,
    `warning: admin.token_file: user nobody cannot read ${token} (EACCES): after the privilege drop, reloads keep the copy read at start; ` +
      `to let reloads see new versions: chown root:${group} ${token} && chmod 0640 ${token}`,
  );
  t.match(r.stderr, `user nobody cannot read the configuration file ${config}`, 'the configuration file itself (its directory is 0700)');
  t.match(r.stderr, 'every reload will fail');
});

// ---------------------------------------------------------------------------
// End to end: `l4lb run` as root with `user: nobody`

/** Serial certificates: a.test root-only (kept), b.test readable by the user (re-read). */
function makeCerts(t: Test, dir: string): void {
  const certs = join(dir, 'certs');
  generateTestCerts(certs);
  chmodSync(certs, 0o755);
  chmodSync(join(certs, 'a.test.crt'), 0o600);
  chmodSync(join(certs, 'a.test.key'), 0o600);
  chmodSync(join(certs, 'b.test.crt'), 0o644);
  chownSync(join(certs, 'b.test.key'), 0, nobody!.gid);
  chmodSync(join(certs, 'b.test.key'), 0o640);
  t.pass('certificates generated');
}

/** A new b.test certificate and key (self-signed), written over the old files: owner and mode stay. */
function renewB(dir: string): string {
  const work = join(dir, 'renew');
  mkdirSync(work);
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(work, 'b.key'), '-out', join(work, 'b.crt'),
      '-subj', '/CN=b.test', '-addext', 'subjectAltName=DNS:b.test', '-days', '30'],
    { encoding: 'utf8', timeout: 30_000 },
  );
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
  // Written into the existing files (copyFile would give them the new files' 0600).
  writeFileSync(join(dir, 'certs', 'b.test.key'), readFileSync(join(work, 'b.key')));
  writeFileSync(join(dir, 'certs', 'b.test.crt'), readFileSync(join(work, 'b.crt')));
  return new X509Certificate(readFileSync(join(work, 'b.crt'))).fingerprint256;
}

/** The fingerprint of the certificate served for `servername`, after an echo through the connection. */
function servedFingerprint(port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername, rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.write('ping\n');
      readLine(s).then(
        (line) => {
          s.destroy();
          if (line === 'ping') resolve(fp);
          else reject(new Error(`echo returned ${line}`));
        },
        (err: Error) => {
          s.destroy();
          reject(err);
        },
      );
    });
    s.once('error', reject);
  });
}

t.test('run with user: nobody and a root-only token, certificate and key: SIGHUP reloads, the token still works, TLS still serves, a readable certificate is re-read', async (t) => {
  if (!requireRoot(t)) return;
  const backend = await backendFor(t);
  const { file: config, cleanup } = writeConfig({
    user: 'nobody',
    log: { level: 'info', access: false },
    admin: { listen: '127.0.0.1:0', token_file: 'TOKEN' },
    listeners: [
      {
        name: 'tls',
        bind: '127.0.0.1:0',
        pool: 'p',
        tls: { mode: 'terminate', certs: [{ cert: 'A.crt', key: 'A.key' }, { cert: 'B.crt', key: 'B.key' }] },
      },
    ],
    pools: [{ name: 'p', servers: [{ name: 'e1', address: backend.address }], health: { interval: '1h' } }],
  });
  t.teardown(cleanup);
  const dir = dirname(config);
  chmodSync(dir, 0o755); // nobody reads the configuration file at a reload (its secrets need not be)
  makeCerts(t, dir);
  const token = file(dir, 'admin.token', 'e2e-token-0123456789\n', 0o600);
  const c = (n: string): string => join(dir, 'certs', n);
  writeFileSync(
    config,
    readFileSync(config, 'utf8')
      .replace('"TOKEN"', JSON.stringify(token))
      .replace('"A.crt"', JSON.stringify(c('a.test.crt')))
      .replace('"A.key"', JSON.stringify(c('a.test.key')))
      .replace('"B.crt"', JSON.stringify(c('b.test.crt')))
      .replace('"B.key"', JSON.stringify(c('b.test.key'))),
  );
  chmodSync(config, 0o644);
  const aPrint = new X509Certificate(readFileSync(c('a.test.crt'))).fingerprint256;
  const bPrint = new X509Certificate(readFileSync(c('b.test.crt'))).fingerprint256;

  const lb = await startCli(config, [], process.env, { untraced: true });
  t.teardown(() => lb.kill());
  await lb.waitForLine((l) => l.msg === 'privileges dropped');
  const warned = lb.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('reloads keep the copy read at start'));
  t.same(
    warned.map((l) => l.path).sort(),
    ['admin.token_file', 'listeners[0].tls.certs[0].cert', 'listeners[0].tls.certs[0].key'],
    'at start, exactly the files nobody cannot read are named',
  );
  t.match(warned.find((l) => l.path === 'admin.token_file'), { fix: `chown root:${nobodyGroup()} ${token} && chmod 0640 ${token}` });
  const port = lb.port('tls');
  t.equal(await servedFingerprint(port, 'a.test'), aPrint);
  t.equal(await servedFingerprint(port, 'b.test'), bPrint);

  const newB = renewB(dir);
  lb.proc.kill('SIGHUP');
  await lb.waitForLine((l) => l.msg === 'configuration reloaded' || l.msg === 'reload failed; the running configuration is unchanged', 20_000);
  t.ok(lb.lines.some((l) => l.msg === 'configuration reloaded'), 'the reload succeeds as nobody');
  t.notOk(lb.lines.some((l) => l.msg === 'reload failed; the running configuration is unchanged'));
  await lb.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('secret file not readable after the privilege drop') && l.file === token);
  const kept = lb.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('secret file not readable after the privilege drop'));
  t.same(kept.map((l) => l.file).sort(), [c('a.test.crt'), c('a.test.key'), token].sort(), 'one line per kept file, with its path');
  t.match(kept[0], { user: 'nobody', fix: /^chown root:\S+ .* && chmod 0640 / });

  t.equal(await servedFingerprint(port, 'a.test'), aPrint, 'the root-only certificate still serves (the copy read at start)');
  t.equal(await servedFingerprint(port, 'b.test'), newB, 'the new version of the readable certificate is served');

  const admin = lb.lines.find((l) => l.msg === 'admin listening')!.port as number;
  const res = await fetch(`http://127.0.0.1:${admin}/pools/p/servers/e1/state`, {
    method: 'POST',
    headers: { authorization: 'Bearer e2e-token-0123456789', 'content-type': 'application/json' },
    body: JSON.stringify({ state: 'drain' }),
  });
  t.equal(res.status, 200, 'the token still works after the reload');
  t.match(await res.json(), { from: 'ready', to: 'drain' });

  lb.proc.kill('SIGTERM');
  t.equal(await lb.exited(), 0);
});
