/**
 * TLS hardening (issue 11), on real loopback sockets:
 * (a) pool TLS files are checked when the configuration loads: `l4lb check`
 *     and `l4lb run` name the bad file by its path, a reload naming one is
 *     refused and the running configuration stays, and the pool uses the
 *     context built at load;
 * (b) TLS to servers sends the host name as written as SNI and verifies it
 *     (a certificate with only a DNS name works), an IP literal gets no SNI;
 * (c) session tickets: kept across reloads, the previous key still resumes
 *     after one rotation, a key two rotations old does not (full handshake),
 *     `session_tickets: false` issues none; a ticket from before client_ca
 *     was added does not resume without a certificate;
 * (d) `strict_sni`: unknown or missing SNI refused before the handshake.
 *
 * Certificates come from scripts/gen-test-certs.sh in a temporary directory.
 * openssl is required: without it the file fails when CI is set, and is
 * otherwise skipped with the reason printed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { buildModel } from '../src/config/load.js';
import { modelToJson } from '../src/config/model-json.js';
import type { PoolModel } from '../src/config/model.js';
import { Pool } from '../src/pool.js';
import { reloadFromFile } from '../src/runtime/reload.js';
import { TicketKeys } from '../src/tls/ticket-keys.js';
import { runCli, writeConfig } from './helpers/cli.js';
import { connect, echoes, sleep, startBackend, waitFor, type Backend } from './helpers/net.js';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { accessLine, backendFor, lbFor } from './helpers/lb.js';
import { refusedClient, tlsClient } from './helpers/tls-clients.js';
import { collectingLogger } from './helpers/logs.js';
import { need } from './helpers/requirements.js';

if (need(t, opensslMissing)) main();

function main(): void {
  const { file: f, pair, pem } = testCerts();
  const openssl = (args: string[]): void => {
    const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  // A server certificate with one DNS name and no IP address (its own trust anchor).
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('localhost.key'), '-out', f('localhost.crt'),
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-days', '30']);
  // The usual wrong files: a DER certificate, plain text, a key of another certificate.
  openssl(['x509', '-in', f('a.test.crt'), '-outform', 'DER', '-out', f('a.test.der')]);
  writeFileSync(f('garbage.pem'), 'this is not a certificate\n');
  const CERTS = [pair('default.test'), pair('a.test'), pair('wild.test')];

  // -------------------------------------------------------------------------
  // Helpers

  /** A full handshake through `port`; returns the last session ticket it received. */
  async function ticketFrom(t: Test, port: number, options: tls.ConnectionOptions): Promise<Buffer> {
    const c = await tlsClient(t, port, options);
    t.equal(await echoes(c, 'first'), 'first');
    // TLS 1.3 tickets come after the handshake (before the echoed data, in practice).
    await waitFor(() => c.sessions.length > 0, 10_000, 'a session ticket');
    c.end();
    return c.sessions.at(-1)!;
  }

  /** Connects with `session`; whether it was resumed. The handshake must succeed and data flow either way. */
  async function resumed(t: Test, port: number, options: tls.ConnectionOptions, session: Buffer, what: string): Promise<boolean> {
    const c = await tlsClient(t, port, { ...options, session });
    const reused = c.isSessionReused();
    t.equal(await echoes(c, 'again'), 'again', `${what}: data flows`);
    c.end();
    return reused;
  }

  interface TlsBackend extends Backend {
    /** SNI of each connection that carried one and sent data (health probes send none). */
    readonly snis: string[];
  }

  /** An echo server speaking TLS with `name`'s certificate, recording the SNI it is sent. */
  async function tlsBackend(name: string): Promise<TlsBackend> {
    const snis: string[] = [];
    const context = tls.createSecureContext(pem(name));
    const server = tls.createServer(
      {
        ...pem(name),
        SNICallback: (_sni, cb) => cb(null, context),
      },
      (s) => {
        s.once('data', () => {
          if (typeof s.servername === 'string') snis.push(s.servername);
        });
        s.on('error', () => {});
        s.pipe(s);
      },
    );
    server.on('tlsClientError', () => {});
    // The TCP side is startBackend's (counted, closed with it); the TLS server only handshakes.
    const b = await startBackend((s) => server.emit('connection', s));
    return Object.assign(b, { snis });
  }

  interface SClient {
    out: string;
  }

  /**
   * `openssl s_client` through `port`: sends a line, waits for its echo
   * (tickets arrive before it), then ends. Never spawnSync: l4lb runs in
   * this process.
   */
  function sClient(t: Test, port: number, extra: string[]): Promise<SClient> {
    const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', f('ca.crt'), '-servername', 'a.test', '-ign_eof', ...extra];
    const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      let settled = false;
      const timer = setTimeout(() => finish(new Error(`openssl ${args.join(' ')}: no echo within 15s; stdout:\n${out}\nstderr:\n${err}`)), 15_000);
      const finish = (e?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        if (e) reject(e);
        else resolve({ out });
      };
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (/^l4lb-echo$/m.test(out)) finish();
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('exit', (code) => setTimeout(() => finish(new Error(`openssl exited (${code}) before the echo; stdout:\n${out}\nstderr:\n${err}`)), 100));
      child.stdin.on('error', () => {});
      child.stdin.write('l4lb-echo\n');
    });
  }

  // -------------------------------------------------------------------------
  // (a) Pool TLS files checked at load

  /** A configuration with one pool per bad-file case, each re-encrypting to a dead port. */
  function badPoolFiles(): unknown {
    const server = [{ address: '127.0.0.1:9' }];
    return {
      listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'ca-garbage' }],
      pools: [
        { name: 'ca-garbage', servers: server, tls: { ca: f('garbage.pem') } },
        { name: 'cert-der', servers: server, tls: { ca: f('ca.crt'), cert: f('a.test.der'), key: f('a.test.key') } },
        { name: 'key-mismatch', servers: server, tls: { ca: f('ca.crt'), cert: f('a.test.crt'), key: f('b.test.key') } },
        { name: 'key-garbage', servers: server, tls: { cert: f('a.test.crt'), key: f('garbage.pem') } },
        { name: 'key-is-cert', servers: server, tls: { cert: f('a.test.crt'), key: f('a.test.crt') } },
      ],
    };
  }

  t.test('l4lb check names every bad pool TLS file by its configuration path', async (t) => {
    const { file, cleanup } = writeConfig(badPoolFiles());
    t.teardown(cleanup);
    const r = runCli(['check', '--config', file]);
    const text = r.stdout + r.stderr;
    t.equal(r.status, 1, 'exit 1');
    t.match(text, `pools[0].tls.ca: CA file ${f('garbage.pem')} contains no PEM certificate`, 'a CA that is no PEM certificate');
    t.match(text, `pools[1].tls.cert: client certificate file ${f('a.test.der')} contains no PEM certificate`, 'a DER certificate');
    t.match(text, `pools[2].tls.key: private key in ${f('b.test.key')} does not match the certificate in ${f('a.test.crt')}`, 'a key of another certificate');
    t.match(text, `pools[3].tls.key: key file ${f('garbage.pem')} contains no PEM private key`, 'a key that is no key');
    t.match(text, /pools\[4\]\.tls\.key: key file .*a\.test\.crt contains no PEM private key/, 'a certificate given as the key');
    t.notMatch(text, /ERR_OSSL/, 'no bare OpenSSL code');
  });

  t.test('l4lb run refuses a bad pool CA with its path, before binding anything', async (t) => {
    const { file, cleanup } = writeConfig({
      listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
      pools: [{ name: 'p', servers: [{ address: '127.0.0.1:9' }], tls: { ca: f('garbage.pem') } }],
    });
    t.teardown(cleanup);
    const r = runCli(['run', '--config', file]);
    const text = r.stdout + r.stderr;
    t.not(r.status, 0, `exits with an error (${r.status})`);
    t.match(text, 'pools[0].tls.ca', 'names the path');
    t.match(text, f('garbage.pem'), 'names the file');
    t.notMatch(text, /ERR_OSSL_PEM_NO_START_LINE/, 'not the bare OpenSSL error');
    t.notMatch(text, /"msg":"listening"/, 'nothing was bound');
  });

  t.test('a reload naming a bad pool CA is refused and the running configuration stays', async (t) => {
    const backend = await backendFor(t, tlsBackend('backend.test'));
    copyFileSync(f('ca.crt'), f('reload-ca.crt'));
    const raw = {
      log: { level: 'info', access: true },
      listeners: [{ name: 'plain', bind: '127.0.0.1:0', pool: 'tls' }],
      pools: [{ name: 'tls', servers: [{ address: backend.address }], tls: { ca: f('reload-ca.crt') } }],
    };
    const lb = await lbFor(t, raw);
    const before = await connect(lb.port());
    t.teardown(() => before.destroy());
    t.equal(await echoes(before, 'before'), 'before', 'TLS to the backend works');
    const model = lb.app.model;

    writeFileSync(f('reload-ca.crt'), 'not a CA any more\n');
    const { file, cleanup } = writeConfig(raw);
    t.teardown(cleanup);
    const { logger, lines } = collectingLogger('info');
    t.equal(await reloadFromFile(lb.app, file, logger), false, 'the reload is refused');
    t.equal(lb.app.model, model, 'the running model stays');
    const problem = lines.find((l) => l.msg === 'configuration problem');
    t.equal(problem?.path, 'pools[0].tls.ca', 'the problem is logged on its path');
    t.match(String(problem?.problem), 'contains no PEM certificate');

    const after = await connect(lb.port());
    t.teardown(() => after.destroy());
    t.equal(await echoes(after, 'after'), 'after', 'new connections still reach the backend over TLS');
    t.equal(await echoes(before, 'still'), 'still', 'the open one too');
  });

  t.test('the pool uses the context built at load: its files are not read again, and the model JSON has none of it', async (t) => {
    copyFileSync(f('ca.crt'), f('once-ca.crt'));
    const model = await buildModel({
      listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
      pools: [{ name: 'p', servers: [{ address: '127.0.0.1:9' }], tls: { ca: f('once-ca.crt'), cert: f('client1.crt'), key: f('client1.key') } }],
    });
    rmSync(f('once-ca.crt'));
    const poolModel = model.pools[0]!;
    const a = new Pool(poolModel);
    const b = new Pool(poolModel);
    t.teardown(() => (a.close(), b.close()));
    a.start();
    b.start();
    t.ok(a.tlsOptions?.secureContext, 'a pool built after the CA file is gone still has its context');
    t.equal(a.tlsOptions, b.tlsOptions, 'one context per load, shared');
    const json = JSON.stringify(modelToJson(model));
    t.notMatch(json, /secureContext|BEGIN/, 'no context or PEM in the model JSON');

    // A model that did not come through the loader is built (and checked) when the pool starts.
    const handMade: PoolModel = { ...poolModel, tls: { ...poolModel.tls!, ca: f('garbage.pem') } };
    t.throws(() => new Pool(handMade).start(), { name: 'ConfigError', message: /pool p: tls\.ca: CA file .*garbage\.pem contains no PEM certificate/ });
  });

  // -------------------------------------------------------------------------
  // (b) Identity of servers: the host name as written

  t.test('TLS to a server named by host: that name is sent as SNI and verified (a DNS-only certificate works)', async (t) => {
    const backend = await backendFor(t, tlsBackend('localhost'));
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        { name: 'by-name', bind: '127.0.0.1:0', pool: 'by-name' },
        { name: 'by-ip', bind: '127.0.0.1:0', pool: 'by-ip' },
        { name: 'explicit', bind: '127.0.0.1:0', pool: 'explicit' },
      ],
      pools: [
        { name: 'by-name', servers: [{ address: `localhost:${backend.port}` }], tls: { ca: f('localhost.crt') } },
        // kind tcp: a tls probe fails the same verification and could mark the server down before the client tries it.
        { name: 'by-ip', retries: 0, servers: [{ address: backend.address }], tls: { ca: f('localhost.crt') }, health: { kind: 'tcp' } },
        { name: 'explicit', servers: [{ address: backend.address }], tls: { ca: f('localhost.crt'), servername: 'localhost' } },
      ],
    });

    const c = await connect(lb.port('by-name'));
    t.teardown(() => c.destroy());
    t.equal(await echoes(c, 'by name'), 'by name', 'verified against the name as written');
    t.same(backend.snis, ['localhost'], 'and sent as SNI');

    const e = await connect(lb.port('explicit'));
    t.teardown(() => e.destroy());
    t.equal(await echoes(e, 'explicit'), 'explicit', 'a configured servername is used for an IP address');
    t.same(backend.snis, ['localhost', 'localhost']);

    const ip = await connect(lb.port('by-ip'));
    t.teardown(() => ip.destroy());
    ip.on('error', () => {});
    const lport = ip.localPort!;
    ip.resume();
    const line = await accessLine(lb, lport);
    t.equal(line.termination, 'connect_failed', 'an IP address is verified as an IP: this certificate has none');
    t.same(backend.snis, ['localhost', 'localhost'], 'and no SNI is sent for an IP address');
  });

  // -------------------------------------------------------------------------
  // (c) Session tickets

  const VERSIONS: Array<[string, tls.ConnectionOptions]> = [
    ['TLS 1.3', {}],
    ['TLS 1.2', { maxVersion: 'TLSv1.2' }],
  ];

  t.test('a session ticket still resumes after a reload (the listener keeps its keys)', async (t) => {
    const echo = await backendFor(t);
    const raw = (idle: string) => ({
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', timeouts: { idle }, tls: { mode: 'terminate', certs: CERTS } }],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const lb = await lbFor(t, raw('1h'));
    const keys = lb.app.listeners[0]!.ticketKeys;
    t.ok(keys, 'the listener holds ticket keys');
    for (const [what, options] of VERSIONS) {
      const opts = { servername: 'a.test', ...options };
      const ticket = await ticketFrom(t, lb.port(), opts);
      await lb.app.reload(await buildModel(raw(what === 'TLS 1.3' ? '2h' : '3h')));
      t.equal(await resumed(t, lb.port(), opts, ticket, what), true, `${what}: resumed after the reload`);
    }
    t.equal(lb.app.listeners[0]!.ticketKeys, keys, 'the same key holder after the reloads');
  });

  t.test('after one rotation a ticket resumes under the previous key; after two, the handshake is full and succeeds', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: CERTS } }],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const keys = lb.app.listeners[0]!.ticketKeys!;
    for (const [what, options] of VERSIONS) {
      const opts = { servername: 'a.test', ...options };
      const ticket = await ticketFrom(t, lb.port(), opts);
      keys.rotate();
      t.ok(keys.previous, 'a previous key is kept');
      t.equal(await resumed(t, lb.port(), opts, ticket, `${what}, one rotation`), true, `${what}: resumed with the previous key`);
      const fresh = await ticketFrom(t, lb.port(), opts);
      t.equal(await resumed(t, lb.port(), opts, fresh, `${what}, new ticket`), true, `${what}: a ticket of the current key resumes`);
      keys.rotate();
      t.equal(await resumed(t, lb.port(), opts, ticket, `${what}, two rotations`), false, `${what}: a key two rotations old: full handshake`);
    }
    t.equal(lb.app.listeners[0]!.stats.tlsHandshakeFailures, 0, 'no handshake failed');
  });

  t.test('openssl s_client resumes a ticket of the previous key after a rotation', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: CERTS } }],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    for (const version of ['-tls1_2', '-tls1_3']) {
      const sess = f(`sess${version}.pem`);
      const first = await sClient(t, lb.port(), [version, '-sess_out', sess]);
      t.match(first.out, /^New, TLSv1\.[23]/m, `${version}: a full handshake first`);
      lb.app.listeners[0]!.ticketKeys!.rotate();
      const second = await sClient(t, lb.port(), [version, '-sess_in', sess]);
      t.match(second.out, /^Reused, TLSv1\.[23]/m, `${version}: reused after a rotation`);
    }
  });

  t.test('session_tickets: false issues no ticket and resumes nothing (TLS 1.2 and 1.3)', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: CERTS, session_tickets: false } }],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    t.equal(lb.app.listeners[0]!.ticketKeys, null, 'no ticket keys');
    const sess = f('no-ticket.pem');
    const first = await sClient(t, lb.port(), ['-tls1_2', '-sess_out', sess]);
    t.notMatch(first.out, /TLS session ticket/, 'TLS 1.2: no ticket in the handshake');
    const second = await sClient(t, lb.port(), ['-tls1_2', '-sess_in', sess]);
    t.match(second.out, /^New, TLSv1\.2/m, 'TLS 1.2: not resumed');
    for (const [what, options] of VERSIONS) {
      const opts = { servername: 'a.test', ...options };
      const c = await tlsClient(t, lb.port(), opts);
      t.equal(await echoes(c, 'x'), 'x');
      // TLS 1.2 hands out a session (id only) at once; TLS 1.3 session ids come as tickets.
      await waitFor(() => c.sessions.length > 0, 10_000, 'a session');
      c.end();
      t.equal(await resumed(t, lb.port(), opts, c.sessions.at(-1)!, what), false, `${what}: not resumed`);
    }
  });

  t.test('a ticket issued before a reload that adds client_ca does not resume without a certificate', async (t) => {
    const echo = await backendFor(t);
    const raw = (mutual: boolean) => ({
      log: { level: 'info', access: true },
      listeners: [
        { name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: CERTS, ...(mutual ? { client_ca: f('client-ca.crt') } : {}) } },
      ],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const lb = await lbFor(t, raw(false));
    const tickets = new Map<string, Buffer>();
    for (const [what, options] of VERSIONS) tickets.set(what, await ticketFrom(t, lb.port(), { servername: 'a.test', ...options }));
    await lb.app.reload(await buildModel(raw(true)));
    for (const [what, options] of VERSIONS) {
      const r = await refusedClient(t, lb.port(), { servername: 'a.test', ...options, session: tickets.get(what)! });
      const line = await accessLine(lb, r.lport);
      t.equal(line.termination, 'tls_error', `${what}: refused (${r.error}): a certificate is required, the old ticket does not stand in for one`);
    }
    const client1 = pem('client1');
    const c = await tlsClient(t, lb.port(), { servername: 'a.test', ...client1, session: tickets.get('TLS 1.3')! });
    t.equal(c.isSessionReused(), false, 'with a certificate: a full handshake');
    t.equal(await echoes(c, 'mutual'), 'mutual');
  });

  t.test('TicketKeys rotates on its timer, keeps the previous key for its window, zeroes keys on close', async (t) => {
    const keys = new TicketKeys({ rotateEveryMs: 300, keepPreviousMs: 150 });
    t.teardown(() => keys.close());
    t.equal(keys.current.length, 48);
    t.equal(keys.previous, null, 'no previous key at first');
    const first = Buffer.from(keys.current);
    keys.start();
    await waitFor(() => keys.previous !== null, 5_000, 'a rotation');
    t.same(Buffer.from(keys.previous!), first, 'the old current key is the previous one');
    t.notSame(Buffer.from(keys.current), first, 'a new current key');
    const generation = keys.generation;
    await waitFor(() => keys.previous === null, 5_000, 'the previous key to expire');
    t.ok(keys.generation > generation, 'expiry is a change the terminators apply');
    await waitFor(() => keys.generation >= generation + 2, 5_000, 'the next rotation');
    keys.close();
    t.ok(keys.current.equals(Buffer.alloc(48)), 'zeroed on close');
    const closed = keys.generation;
    await sleep(400);
    t.equal(keys.generation, closed, 'no rotation after close');
    t.same(keys.toJSON(), { generation: closed, previous: false }, 'no key bytes when serialised');
    t.throws(() => new TicketKeys({ rotateEveryMs: 0 }), RangeError);
    t.throws(() => new TicketKeys({ keepPreviousMs: 2 ** 31 }), RangeError, 'beyond what a timer can wait');
  });

  // -------------------------------------------------------------------------
  // (d) strict_sni

  t.test('strict_sni: a known name is served; an unknown name and no SNI are refused before the handshake, as tls_error', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        { name: 'strict', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: CERTS, strict_sni: true } },
        { name: 'lenient', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: CERTS } },
      ],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const port = lb.port('strict');
    for (const name of ['a.test', 'x.wild.test']) {
      const c = await tlsClient(t, port, { servername: name });
      t.equal(await echoes(c, name), name, `${name} is served`);
      c.end();
    }
    const ticket = await ticketFrom(t, port, { servername: 'a.test' });
    t.equal(await resumed(t, port, { servername: 'a.test' }, ticket, 'strict, resumed'), true, 'resumption works with strict_sni');

    const stats = lb.app.listeners[0]!.stats;
    const cases: Array<[string, tls.ConnectionOptions, RegExp]> = [
      ['an unknown name', { servername: 'unknown.test' }, /no certificate for server name "unknown\.test"/],
      ['a name one label too deep for the wildcard', { servername: 'y.x.wild.test' }, /no certificate for server name/],
      ['no SNI', {}, /no server name \(SNI\)/],
    ];
    for (const [what, options, reason] of cases) {
      const failures = stats.tlsHandshakeFailures;
      const r = await refusedClient(t, port, options);
      t.equal(r.secure, false, `${what}: no handshake`);
      t.match(r.error, /UNRECOGNIZED_NAME/, `${what}: the client is told (${r.error})`);
      const line = await accessLine(lb, r.lport);
      t.equal(line.termination, 'tls_error', `${what}: tls_error`);
      t.equal(line.server, null, `${what}: no server was connected`);
      t.match(String(line.reason), reason, `${what}: the reason is logged`);
      t.equal(stats.tlsHandshakeFailures, failures + 1, `${what}: counted as a failed handshake`);
    }
    const lenient = await tlsClient(t, lb.port('lenient'), { servername: 'unknown.test' });
    t.equal(String(lenient.getPeerCertificate().subject?.CN), 'default.test', 'without strict_sni an unknown name gets the default certificate');
  });

  t.test('strict_sni: a client that leaves in the middle of its ClientHello ends as a cut-short handshake', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [{ name: 'strict', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: CERTS, strict_sni: true } }],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const c = await connect(lb.port());
    t.teardown(() => c.destroy());
    c.on('error', () => {});
    const lport = c.localPort!;
    // Record header and the start of a ClientHello of 200 bytes, then FIN.
    c.end(Buffer.from('16030100c8010000c40303' + '00'.repeat(16), 'hex'));
    c.resume();
    const line = await accessLine(lb, lport);
    t.equal(line.termination, 'tls_error');
    t.match(String(line.reason), /closed the connection during the handshake/);

    const silent = await connect(lb.port());
    t.teardown(() => silent.destroy());
    const silentPort = silent.localPort!;
    silent.end();
    silent.resume();
    t.equal((await accessLine(lb, silentPort)).termination, 'client_close', 'a connection that sent nothing is a plain close');
  });

  t.test('strict_sni and session_tickets are for terminate only: with passthrough they are configuration errors', async (t) => {
    await t.rejects(
      buildModel({
        listeners: [{ name: 'p', bind: '127.0.0.1:0', pool: 'x', tls: { mode: 'passthrough', strict_sni: true, session_tickets: false } }],
        pools: [{ name: 'x', servers: [{ address: '127.0.0.1:9' }] }],
      }),
      {
        name: 'ConfigError',
        problems: [
          { path: 'listeners[0].tls.session_tickets', message: /passthrough/ },
          { path: 'listeners[0].tls.strict_sni', message: /passthrough/ },
        ],
      },
    );
    await t.rejects(
      buildModel({
        listeners: [{ name: 'p', bind: '127.0.0.1:0', pool: 'x', tls: { mode: 'terminate', certs: CERTS, strict_sni: 'yes' } }],
        pools: [{ name: 'x', servers: [{ address: '127.0.0.1:9' }] }],
      }),
      { problems: [{ path: 'listeners[0].tls.strict_sni', message: /true or false/ }] },
    );
  });
}
