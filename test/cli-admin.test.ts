/**
 * The real CLI process against a real `l4lb run` with an admin section:
 * `l4lb status` and `l4lb server drain|ready|maint`, token from
 * --token-file and from L4LB_ADMIN_TOKEN, and the error exits; `l4lb check
 * --diff`'s token (also from the checked file) and its redacted payloads.
 * Needs dist/ (npm test builds it).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { deadPort, namedBackend, whoAnswers, type Backend } from './helpers/net.js';
import { BIN, adminPortOf, cliFor, runCli, writeConfig, type Child } from './helpers/cli.js';
import { backendFor, namedBackendsFor } from './helpers/lb.js';

const TOKEN = 'cli-test-token-5f1e2d';

/** Run the CLI without blocking this process (the backends live here), with a chosen environment. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const base = { ...process.env };
    delete base.L4LB_ADMIN_TOKEN;
    const p = spawn(process.execPath, [BIN, ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

interface Setup {
  readonly child: Child;
  readonly admin: string;
  readonly tokenFile: string;
  readonly a: Backend;
  readonly b: Backend;
  readonly frontPort: number;
}

async function setup(t: Test): Promise<Setup> {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const dir = t.testdir({ 'admin.token': `${TOKEN}\n` });
  const tokenFile = join(dir, 'admin.token');
  const child = await cliFor(t, {
    admin: { listen: '127.0.0.1:0', token_file: tokenFile },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'round_robin', servers: [{ name: 'a', address: a.address }, { address: b.address }] }],
  });
  return { child, admin: `http://127.0.0.1:${await adminPortOf(child)}`, tokenFile, a, b, frontPort: child.port('front') };
}

t.test('l4lb status prints an aligned table; server drain/ready work with --token-file and L4LB_ADMIN_TOKEN', async (t) => {
  const s = await setup(t);
  await whoAnswers(s.frontPort);

  const status = await cli(['status', '--admin', s.admin]);
  t.equal(status.status, 0, status.stderr);
  const lines = status.stdout.split('\n');
  // One address column: the bind as configured (127.0.0.1:0) with the port it got.
  t.match(lines[0], /^LISTENER +ADDRESS +POOL +OPEN +ACCEPTED$/);
  t.match(lines[1], new RegExp(`^front +127\\.0\\.0\\.1:${s.frontPort} +p +0 +1$`));
  t.match(status.stdout, /^POOL p \(round_robin, from front\): 2\/2 servers taking new connections$/m);
  const header = lines.find((l) => l.includes('NAME'))!;
  t.match(header, /^ {2}NAME +ADDRESS +STATE +ADMIN +WEIGHT +ACTIVE +TOTAL +FAILS +LAST CHECK$/);
  const rowA = lines.find((l) => l.startsWith('  a '))!;
  const rowB = lines.find((l) => l.startsWith(`  ${s.b.address} `))!;
  t.match(rowA, new RegExp(`^ {2}a +${s.a.address.replace(/\./g, '\\.')} +up +ready +1 +0 +1 +0 +`));
  t.match(rowB, /up +ready/);
  // Aligned: every column of the server table starts at the same offset in every row.
  for (const col of ['ADDRESS', 'STATE', 'ADMIN', 'LAST CHECK']) {
    const at = header.indexOf(col);
    t.equal(rowA[at - 1], ' ', `${col} column aligned (a)`);
    t.not(rowA[at], ' ', `${col} column starts with a value (a)`);
    t.not(rowB[at], ' ', `${col} column starts with a value (b)`);
  }

  const json = await cli(['status', '--json', '--admin', `${s.admin}/`]);
  t.equal(json.status, 0);
  t.match(JSON.parse(json.stdout), { phase: 'running', pools: [{ name: 'p', servers: [{ name: 'a' }, { name: s.b.address }] }] });

  // Drain b (named by its address) with --token-file.
  const drain = await cli(['server', 'drain', 'p', s.b.address, '--admin', s.admin, '--token-file', s.tokenFile]);
  t.equal(drain.status, 0, drain.stderr);
  t.equal(drain.stdout, `pool p, server ${s.b.address}: ready -> drain\n`);
  const answers = new Set<string>();
  for (let i = 0; i < 6; i++) answers.add(await whoAnswers(s.frontPort));
  t.same([...answers], ['a'], 'a drained server takes no new connections');
  const after = await cli(['status', '--admin', s.admin]);
  t.match(after.stdout, new RegExp(`^ {2}${s.b.address.replace(/\./g, '\\.')} +\\S+ +up +drain `, 'm'), 'status shows drain');
  t.match(after.stdout, /1\/2 servers taking new connections/);

  const again = await cli(['server', 'drain', 'p', s.b.address, '--admin', s.admin, '--token-file', s.tokenFile]);
  t.equal(again.stdout, `pool p, server ${s.b.address}: already drain\n`);

  // Back to ready with the token from the environment.
  const ready = await cli(['server', 'ready', 'p', s.b.address, '--admin', s.admin], { L4LB_ADMIN_TOKEN: TOKEN });
  t.equal(ready.status, 0, ready.stderr);
  t.equal(ready.stdout, `pool p, server ${s.b.address}: drain -> ready\n`);
  const maint = await cli(['server', 'maint', 'p', 'a', '--admin', s.admin], { L4LB_ADMIN_TOKEN: ` ${TOKEN}\n` });
  t.equal(maint.status, 0, maint.stderr);
  t.match(maint.stdout, /ready -> maint/);

  // Log lines are written asynchronously: wait for the last one.
  await s.child.waitForLine((l) => l.msg === 'server admin state' && l.to === 'maint');
  const logged = s.child.lines.filter((l) => l.msg === 'server admin state');
  t.match(logged, [
    { pool: 'p', server: s.b.address, from: 'ready', to: 'drain' },
    { pool: 'p', server: s.b.address, from: 'drain', to: 'ready' },
    { pool: 'p', server: 'a', from: 'ready', to: 'maint' },
  ]);
  t.notMatch(JSON.stringify(s.child.lines), TOKEN, 'the token is never logged');
});

t.test('the admin commands exit 1 with a clear message on a bad token, unknown names, no token, an unreachable admin server and bad arguments', async (t) => {
  const s = await setup(t);
  const wrong = await cli(['server', 'drain', 'p', 'a', '--admin', s.admin], { L4LB_ADMIN_TOKEN: 'nope' });
  t.equal(wrong.status, 1, 'wrong token: exit 1');
  t.match(wrong.stderr, /401: invalid token; check --token-file or L4LB_ADMIN_TOKEN/);
  t.equal(wrong.stdout, '');

  const other = writeConfig('other-token\n', 'other.token');
  t.teardown(other.cleanup);
  const wrongFile = await cli(['server', 'drain', 'p', 'a', '--admin', s.admin, '--token-file', other.file], { L4LB_ADMIN_TOKEN: TOKEN });
  t.equal(wrongFile.status, 1, '--token-file wins over the environment');
  t.match(wrongFile.stderr, /401/);

  const noPool = await cli(['server', 'drain', 'q', 'a', '--admin', s.admin, '--token-file', s.tokenFile]);
  t.equal(noPool.status, 1);
  t.match(noPool.stderr, /404: no pool named "q"/);
  const noServer = await cli(['server', 'drain', 'p', 'zz', '--admin', s.admin, '--token-file', s.tokenFile]);
  t.equal(noServer.status, 1);
  t.match(noServer.stderr, /404: no server named "zz" in pool "p"/);

  const noToken = await cli(['server', 'drain', 'p', 'a', '--admin', s.admin]);
  t.equal(noToken.status, 1);
  t.match(noToken.stderr, /no admin token: pass --token-file FILE or set L4LB_ADMIN_TOKEN/);
  const missingFile = await cli(['server', 'drain', 'p', 'a', '--admin', s.admin, '--token-file', '/nonexistent/tok']);
  t.equal(missingFile.status, 1);
  t.match(missingFile.stderr, /--token-file: cannot read token file: ENOENT/);

  const badAction = await cli(['server', 'pause', 'p', 'a', '--admin', s.admin]);
  t.equal(badAction.status, 1);
  t.match(badAction.stderr, /Allowed choices are drain, ready, maint/);

  const dead = `http://127.0.0.1:${await deadPort()}`;
  const down = await cli(['status', '--admin', dead]);
  t.equal(down.status, 1, 'unreachable admin server: exit 1');
  t.match(down.stderr, /cannot reach the admin server at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
  const downServer = await cli(['server', 'drain', 'p', 'a', '--admin', dead], { L4LB_ADMIN_TOKEN: TOKEN });
  t.equal(downServer.status, 1);
  t.match(downServer.stderr, /cannot reach the admin server/);
  const badUrl = await cli(['status', '--admin', 'localhost:9900']);
  t.equal(badUrl.status, 1);
  t.match(badUrl.stderr, /--admin: expected an http:\/\/ or https:\/\/ URL/);
  const notAdmin = await cli(['status', '--admin', `${s.admin}/healthz/`]);
  t.equal(notAdmin.status, 1, 'a URL that is not the admin root: exit 1');

  // Nothing changed through all of that.
  const status = await cli(['status', '--admin', s.admin]);
  t.notMatch(status.stdout, /drain|maint/);
});

t.test('l4lb check reports admin problems by path', async (t) => {
  const { file, cleanup } = writeConfig({
    admin: { listen: '127.0.0.1:99999', token_file: '/nonexistent/admin.token' },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }] }],
  });
  t.teardown(cleanup);
  const r = runCli(['check', '--config', file]);
  t.equal(r.status, 1);
  t.match(r.stderr, /admin\.listen: expected a port between 0 and 65535/);
  t.match(r.stderr, /admin\.token_file: cannot read token file: ENOENT/);
  t.match(r.stderr, /2 errors/);
});

t.test('l4lb check --diff takes the token from --token-file, L4LB_ADMIN_TOKEN or the checked file\'s admin.token_file, in that order', async (t) => {
  const b = await backendFor(t, namedBackend('b'));
  const tokenFile = join(t.testdir({ 'admin.token': `${TOKEN}\n`, 'wrong.token': 'wrong-token\n' }), 'admin.token');
  const wrongFile = tokenFile.replace(/admin\.token$/, 'wrong.token');
  const raw = {
    admin: { listen: '127.0.0.1:0', token_file: tokenFile },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ name: 'b', address: b.address }], health: { interval: '1h', send: 'AUTH s3cr3t\r\n', expect: '+OK' } }],
  };
  const child = await cliFor(t, raw);
  const admin = `http://127.0.0.1:${await adminPortOf(child)}`;

  const fromFile = await cli(['check', '--config', child.file, '--diff', admin]);
  t.equal(fromFile.status, 0, `the checked file's admin.token_file: ${fromFile.stderr}`);
  t.match(fromFile.stdout, /\nno changes\n$/, 'same payloads compare equal through the redaction');

  // Without admin.token_file in the checked file, only --token-file and the environment are left.
  const bare = writeConfig({ ...raw, admin: { listen: '127.0.0.1:0' } }, 'bare.json');
  t.teardown(bare.cleanup);
  const none = await cli(['check', '--config', bare.file, '--diff', admin]);
  t.equal(none.status, 1);
  t.match(none.stderr, /no admin token for --diff \(GET \/config needs it\): pass --token-file FILE, set L4LB_ADMIN_TOKEN, or set admin\.token_file in the checked file/);
  const fromEnv = await cli(['check', '--config', bare.file, '--diff', admin], { L4LB_ADMIN_TOKEN: TOKEN });
  t.equal(fromEnv.status, 0, `L4LB_ADMIN_TOKEN: ${fromEnv.stderr}`);
  const fromOption = await cli(['check', '--config', bare.file, '--diff', admin, '--token-file', tokenFile]);
  t.equal(fromOption.status, 0, `--token-file: ${fromOption.stderr}`);

  const optionWins = await cli(['check', '--config', child.file, '--diff', admin, '--token-file', wrongFile], { L4LB_ADMIN_TOKEN: TOKEN });
  t.equal(optionWins.status, 1, '--token-file wins over the environment and the file');
  t.match(optionWins.stderr, /admin server answered 401: invalid token; check --token-file, L4LB_ADMIN_TOKEN or the checked file's admin\.token_file/);
  const envWins = await cli(['check', '--config', child.file, '--diff', admin], { L4LB_ADMIN_TOKEN: 'wrong-token' });
  t.equal(envWins.status, 1, 'the environment wins over the checked file');
  t.match(envWins.stderr, /401/);
  t.notMatch(JSON.stringify(child.lines), /s3cr3t|wrong-token/, 'neither the payload nor a token is logged');
});

t.test('l4lb check --diff shows a changed probe payload without printing either payload', async (t) => {
  const b = await backendFor(t, namedBackend('b'));
  const tokenFile = join(t.testdir({ 'admin.token': `${TOKEN}\n` }), 'admin.token');
  const raw = {
    admin: { listen: '127.0.0.1:0', token_file: tokenFile },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ name: 'b', address: b.address }], health: { interval: '1h', send: 'AUTH s3cr3t\r\n', expect: '+OK' } }],
  };
  const child = await cliFor(t, raw);
  const admin = `http://127.0.0.1:${await adminPortOf(child)}`;

  const next = structuredClone(raw);
  next.pools[0]!.health.send = 'AUTH n3wpa55\r\n';
  const changed = writeConfig(next, 'next.json');
  t.teardown(changed.cleanup);
  const r = await cli(['check', '--config', changed.file, '--diff', admin]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^ {6}health\.send {2}<redacted [0-9a-f]{8}> → <redacted [0-9a-f]{8}>$/m, 'the change is shown');
  t.notMatch(r.stdout, /health\.expect/, 'the unchanged expect is not');
  const output = r.stdout + r.stderr;
  for (const secret of ['s3cr3t', 'n3wpa55']) {
    t.notMatch(output, secret, `${secret} is not printed`);
    t.notMatch(output, Buffer.from(secret).toString('hex'), `nor its hex`);
  }
});
