import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, ROOT, cliFor, rssOf, startCli, writeConfig, runCli } from './helpers/cli.js';
import { namedBackend, sleep, waitFor, whoAnswers } from './helpers/net.js';
import { freePort } from './helpers/peers.js';
import { backendFor } from './helpers/lb.js';
import { need } from './helpers/requirements.js';

/** A tool from Debian's systemd package (or python3): fail in CI when missing, else skip with the reason. */
function requireTool(t: Test, tool: string): boolean {
  return need(t, spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0 ? null : `${tool} is not installed`);
}

t.test('the unit files pass systemd-analyze verify with no warning', async (t) => {
  if (!requireTool(t, 'systemd-analyze')) return;
  for (const unit of ['l4lb.service', 'l4lb.socket']) {
    const r = spawnSync('systemd-analyze', ['verify', join(ROOT, 'conf/systemd', unit)], { encoding: 'utf8', cwd: join(ROOT, 'conf/systemd') });
    t.equal(r.status, 0, `${unit}: exit 0`);
    t.equal(r.stderr.trim(), '', `${unit}: no warning (systemd-analyze only warns on bad values)`);
  }
  const service = readFileSync(join(ROOT, 'conf/systemd/l4lb.service'), 'utf8');
  for (const key of ['Type=notify', 'ExecStartPre=', 'ExecReload=', 'LimitNOFILE=', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'RestrictAddressFamilies=', 'SystemCallFilter=@system-service', 'AmbientCapabilities=CAP_NET_BIND_SERVICE', 'User=']) {
    t.match(service, key, `service has ${key}`);
  }
});

/** A fake NOTIFY_SOCKET that, like systemd, closes the barrier fd systemd-notify sends. */
const RECEIVER = `
import socket, sys, os, array
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print('bound', flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array('i'); fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for fd in fds: os.close(fd)
    print(msg.decode().replace('\\n', ' '), flush=True)
`;

t.test('sd_notify sends READY after binding, RELOADING/READY around a reload and STOPPING at shutdown', async (t) => {
  if (!requireTool(t, 'python3') || !requireTool(t, 'systemd-notify')) return;
  const dir = mkdtempSync(join(tmpdir(), 'l4lb-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'recv.py'), RECEIVER);
  const sock = join(dir, 'notify.sock');
  const receiver = spawn('python3', [join(dir, 'recv.py'), sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => receiver.kill());
  let received = '';
  receiver.stdout.on('data', (d: Buffer) => (received += d.toString()));
  await waitFor(() => received.includes('bound'), 5_000, 'the fake notify socket');

  const backend = await backendFor(t, namedBackend('a'));
  const lb = await cliFor(t, { listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }], pools: [{ name: 'p', servers: [{ address: backend.address }] }] }, [], { ...process.env, NOTIFY_SOCKET: sock });
  await waitFor(() => /READY=1/.test(received), 5_000, 'READY=1');
  t.match(received, new RegExp(`MAINPID=${lb.proc.pid}`), 'the message names the main PID');
  t.match(received, /STATUS=serving 1 listener/, 'a STATUS line');
  lb.proc.kill('SIGHUP');
  await waitFor(() => /RELOADING=1[\s\S]*READY=1[\s\S]*READY=1/.test(received) || /READY=1[\s\S]*RELOADING=1[\s\S]*READY=1/.test(received), 5_000, 'RELOADING=1 then READY=1');
  lb.proc.kill('SIGTERM');
  await waitFor(() => /STOPPING=1/.test(received), 5_000, 'STOPPING=1');
  t.equal(await lb.exited(), 0);
});

t.test('socket activation: bind systemd:NAME uses the socket systemd passes', async (t) => {
  if (!requireTool(t, 'systemd-socket-activate')) return;
  const backend = await backendFor(t, namedBackend('activated'));
  const { file, cleanup } = writeConfig({
    listeners: [{ name: 'front', bind: 'systemd:front', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: backend.address }] }],
  });
  t.teardown(cleanup);
  const port = await freePort();
  // systemd-socket-activate binds, then starts l4lb on the first connection with LISTEN_FDS/LISTEN_FDNAMES set.
  const proc = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '--fdname=front', process.execPath, BIN, 'run', '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => proc.kill('SIGKILL'));
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('Listening on'), 5_000, 'systemd-socket-activate to listen');
  t.equal(await whoAnswers(port), 'activated', 'the first connection is served by l4lb on the inherited socket');
  t.equal(await whoAnswers(port), 'activated', 'and the next');
  await waitFor(() => out.includes('"msg":"listening"'), 5_000, 'the listening log line');
  proc.kill('SIGTERM');
});

t.test('bind systemd:NAME without socket activation fails at start with a clear error', async (t) => {
  const { file, cleanup } = writeConfig({ listeners: [{ name: 'front', bind: 'systemd:front', pool: 'p' }], pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }] }] });
  t.teardown(cleanup);
  t.equal(runCli(['check', '--config', file]).status, 0, 'the configuration itself is valid');
  await t.rejects(startCli(file), /exited \(1\)/);
  const bad = writeConfig({ listeners: [{ name: 'front', bind: 'systemd:bad name', pool: 'p' }], pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }] }] });
  t.teardown(bad.cleanup);
  const r = runCli(['check', '--config', bad.file]);
  t.equal(r.status, 1);
  t.match(r.stderr, /listeners\[0\]\.bind: expected "systemd:NAME"/);
});

t.test('with user:, privileges are dropped after binding', async (t) => {
  if (!need(t, process.getuid?.() === 0 ? null : 'needs root to drop privileges')) return;
  const backend = await backendFor(t, namedBackend('a'));
  const { file, cleanup } = writeConfig({
    user: 'nobody',
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: backend.address }] }],
  });
  t.teardown(cleanup);
  const lb = await startCli(file, [], process.env, { untraced: true });
  t.teardown(() => lb.kill());
  await lb.waitForLine((l) => l.msg === 'privileges dropped');
  const status = readFileSync(`/proc/${lb.proc.pid}/status`, 'utf8');
  const uid = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status);
  const nobody = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim());
  t.same(uid?.slice(1, 4).map(Number), [nobody, nobody, nobody], 'real, effective and saved uid are nobody');
  t.equal(await whoAnswers(lb.port('front')), 'a', 'still serving');
  t.ok(rssOf(lb.proc.pid!) > 0);
  lb.proc.kill('SIGTERM');
  t.equal(await lb.exited(), 0);
  await sleep(0);
});
