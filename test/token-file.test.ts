/**
 * The admin token file's owner and mode (like sshd's StrictModes): whoever
 * can write it can set the token, so a world-writable file, or one owned by
 * neither root nor the user l4lb runs as, is refused by the server (`run`,
 * reload), by `check`, and by the CLI clients' `--token-file`; each message
 * names the file and the fix install.sh applies (root:GROUP, 0640).
 */
import t, { type Test } from 'tap';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { readTokenFile } from '../src/config/token-file.js';
import { lookupUser } from '../src/runtime/privileges.js';
import { runCli, startCli, writeConfig } from './helpers/cli.js';
import { namedBackend } from './helpers/net.js';
import { backendFor, lbFor } from './helpers/lb.js';
import { need } from './helpers/requirements.js';

const TOKEN = 'token-file-test-0123456789';

function tokenIn(t: Test, mode: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'l4lb-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'admin.token');
  writeFileSync(path, `${TOKEN}\n`);
  chmodSync(path, mode);
  return path;
}

function config(tokenFile: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...extra,
    admin: { listen: '127.0.0.1:0', token_file: tokenFile },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ name: 's', address: '127.0.0.1:1' }], health: { interval: '1h' } }],
  };
}

function requireRoot(t: Test): boolean {
  return need(t, process.getuid?.() === 0 ? null : 'needs root to give files to other users');
}

t.test('a world-writable token file is refused by check, by run and by the CLI client, naming the file and the fix', async (t) => {
  const token = tokenIn(t, 0o666);
  const { file, cleanup } = writeConfig(config(token));
  t.teardown(cleanup);
  const problem = `token file "${token}" is writable by every user (mode 0666): anyone could set the admin token; fix: chown root:`;
  const fix = ` ${token} && chmod 0640 ${token}`;

  const check = runCli(['check', '--config', file]);
  t.equal(check.status, 1, 'check fails');
  t.match(check.stderr, `admin.token_file: ${problem}`);
  t.match(check.stderr, fix);

  const run = runCli(['run', '--config', file]);
  t.equal(run.status, 1, 'run refuses to start');
  t.match(run.stderr, `admin.token_file: ${problem}`);

  // The client refuses too (ssh does the same with its own files): its request is never sent.
  const client = runCli(['server', 'drain', 'p', 's', '--admin', 'http://127.0.0.1:1', '--token-file', token]);
  t.equal(client.status, 1);
  t.match(client.stderr, `--token-file: ${problem}`);

  const direct = await readTokenFile(token);
  t.type(direct, 'string');
  chmodSync(token, 0o640);
  t.same(await readTokenFile(token), { token: TOKEN, kept: false }, 'accepted once fixed');
});

t.test('a token file owned by neither root nor the user l4lb runs as is refused; root, the user running and the user of user: are accepted', async (t) => {
  if (!requireRoot(t)) return;
  const daemon = lookupUser('daemon');
  const nobody = lookupUser('nobody');
  if (daemon === undefined || nobody === undefined) {
    t.plan(0, 'users daemon and nobody are needed');
    return;
  }
  const token = tokenIn(t, 0o600);
  t.same(await readTokenFile(token), { token: TOKEN, kept: false }, "root's file");
  chownSync(token, daemon.uid, 0);
  t.equal(
    await readTokenFile(token),
    `token file "${token}" is owned by daemon (uid ${daemon.uid}), neither root nor the user l4lb runs as (root): that user could set the admin token; ` +
      `fix: chown root:l4lb ${token} && chmod 0640 ${token}`,
    'the fix is the setup install.sh makes (root:l4lb 0640)',
  );
  t.same(await readTokenFile(token, { user: 'daemon' }), { token: TOKEN, kept: false }, 'owned by the user of user:');
  t.match(await readTokenFile(token, { user: 'nobody' }), `neither root nor the user l4lb runs as (nobody)`);

  const { file, cleanup } = writeConfig(config(token));
  t.teardown(cleanup);
  const check = runCli(['check', '--config', file]);
  t.equal(check.status, 1);
  t.match(check.stderr, `admin.token_file: token file "${token}" is owned by daemon (uid ${daemon.uid}), neither root nor the user l4lb runs as (root)`);

  // run with user: nobody and the token owned by nobody: accepted at load and by the admin server (still root when it starts).
  chownSync(token, nobody.uid, nobody.gid);
  await backendFor(t, namedBackend('a'));
  const own = writeConfig(config(token, { user: 'nobody' }));
  t.teardown(own.cleanup);
  chmodSync(dirname(own.file), 0o755);
  chmodSync(own.file, 0o644);
  t.equal(runCli(['check', '--config', own.file]).status, 0, 'check accepts the file of the user l4lb drops to');
  const lb = await startCli(own.file, [], process.env, { untraced: true });
  t.teardown(() => lb.kill());
  await lb.waitForLine((l) => l.msg === 'privileges dropped');
  t.match(lb.lines.find((l) => l.msg === 'admin listening'), { token: true }, 'the admin server took the token');
  lb.proc.kill('SIGTERM');
  t.equal(await lb.exited(), 0);
});

t.test("the admin server's warning about a world-readable token file describes install.sh's setup, not chmod 600", async (t) => {
  const token = tokenIn(t, 0o644);
  const lb = await lbFor(t, config(token));
  // startL4lb's logger captures every line, not only access lines.
  const warning = lb.lines.find((l) => l.msg !== undefined && String(l.msg).startsWith('admin token file is readable by every user'));
  t.ok(warning, 'warned');
  t.match(warning?.msg, 'chown root:l4lb FILE && chmod 0640 FILE');
  t.notMatch(warning?.msg, 'chmod 600');
  t.equal(warning?.token_file, token);
});
