/**
 * scripts/install.sh into a temporary DESTDIR: the application with its
 * production dependencies only, the l4lb command, a configuration that passes
 * `l4lb check`, an admin token, the systemd units; a second run upgrades the
 * application and keeps the operator's configuration and token.
 *
 * Runs `npm ci --omit=dev` in the target (the npm registry or npm's cache).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from './helpers/cli.js';

const SCRIPT = join(ROOT, 'scripts', 'install.sh');

function install(dest: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [SCRIPT], { env: { ...process.env, DESTDIR: dest }, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function l4lb(dest: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  // As the unit runs it: the launcher, which picks the Node.js installed with the application.
  const r = spawnSync(join(dest, 'opt/l4lb/bin/l4lb'), args, { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('install.sh --help prints the usage; an unknown argument is a usage error', async (t) => {
  const r = spawnSync('bash', [SCRIPT, '--help'], { encoding: 'utf8' });
  t.equal(r.status, 0);
  t.match(r.stdout, /DESTDIR/);
  const bad = spawnSync('bash', [SCRIPT, '--nonsense'], { encoding: 'utf8' });
  t.equal(bad.status, 2, 'an unknown argument is a usage error');
});

t.test('install.sh installs into a DESTDIR, and a second run keeps the configuration and the token and replaces the application', { timeout: 300_000 }, async (t) => {
  const dest = mkdtempSync(join(tmpdir(), 'l4lb-install-'));
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));

  const started = Date.now();
  const first = install(dest);
  t.comment(`install.sh took ${Date.now() - started} ms`);
  t.equal(first.status, 0, first.stderr);
  t.match(first.stdout, /l4lb \d+\.\d+\.\d+ is installed\. Next steps:/);
  t.match(first.stdout, /systemctl enable --now l4lb/);

  const app = join(dest, 'opt/l4lb');
  for (const f of ['bin/l4lb', 'bin/l4lb.js', 'dist/cli/main.js', 'package.json', 'package-lock.json', 'LICENSE', 'README.md', 'conf/l4lb.schema.json']) {
    t.ok(existsSync(join(app, f)), `opt/l4lb/${f}`);
  }
  t.ok(statSync(join(app, 'bin/l4lb')).mode & 0o111, 'the launcher bin/l4lb is executable (it carries the heap flag)');
  const runtime = spawnSync(join(app, 'node_modules/node/bin/node'), ['--version'], { encoding: 'utf8' });
  t.match(runtime.stdout, /^v24\./, `the Node.js l4lb runs on is installed with it (${runtime.stdout.trim()})`);
  for (const dep of ['commander', 'pino', 'ajv', 'yaml', 'prom-client']) t.ok(existsSync(join(app, 'node_modules', dep)), `production dependency ${dep}`);
  for (const dev of ['tap', 'typescript', '@types/node']) t.notOk(existsSync(join(app, 'node_modules', dev)), `no development dependency ${dev}`);
  t.notOk(existsSync(join(app, 'src')), 'no sources');
  t.notOk(existsSync(join(app, 'test')), 'no tests');

  t.equal(readlinkSync(join(dest, 'usr/local/bin/l4lb')), '/opt/l4lb/bin/l4lb', 'l4lb on PATH (the unit runs `/usr/bin/env l4lb`)');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const version = l4lb(dest, ['--version']);
  t.equal(version.stdout.trim(), pkg.version, 'the installed copy runs');

  const config = join(dest, 'etc/l4lb/l4lb.yaml');
  const token = join(dest, 'etc/l4lb/admin.token');
  t.equal(readFileSync(config, 'utf8'), readFileSync(join(ROOT, 'conf/l4lb.example.yaml'), 'utf8'), 'the configuration is the example');
  t.match(readFileSync(token, 'utf8'), /^[0-9a-f]{64}\n$/, 'a random 256-bit admin token');
  t.equal(statSync(token).mode & 0o777, 0o640, 'the token is not world-readable');
  // The example names /etc/l4lb/admin.token: check it with the token where DESTDIR put it.
  const checkable = join(dest, 'check.yaml');
  writeFileSync(checkable, readFileSync(config, 'utf8').replace('/etc/l4lb/admin.token', token));
  const check = l4lb(dest, ['check', '--config', checkable]);
  t.equal(check.status, 0, `the installed configuration passes l4lb check: ${check.stdout}${check.stderr}`);

  for (const unit of ['l4lb.service', 'l4lb.socket']) {
    t.equal(readFileSync(join(dest, 'etc/systemd/system', unit), 'utf8'), readFileSync(join(ROOT, 'conf/systemd', unit), 'utf8'), `${unit} installed`);
  }

  // The operator edits the configuration; a second run (an upgrade) keeps it and the token.
  appendFileSync(config, '# edited by the operator\n');
  const tokenBefore = readFileSync(token, 'utf8');
  writeFileSync(join(app, 'stale-file'), 'from an older version');
  const second = install(dest);
  t.equal(second.status, 0, second.stderr);
  t.match(second.stdout, /keeping the existing .*etc\/l4lb\/l4lb\.yaml/);
  t.match(readFileSync(config, 'utf8'), /# edited by the operator\n$/, 'the configuration is kept');
  t.equal(readFileSync(token, 'utf8'), tokenBefore, 'the token is kept');
  t.notOk(existsSync(join(app, 'stale-file')), 'the application is replaced, not merged');
  t.equal(l4lb(dest, ['--version']).stdout.trim(), pkg.version, 'and still runs');
});
