/**
 * TLS end to end through a running l4lb, on real loopback sockets:
 * (a) termination: the certificate is chosen by SNI (checked with
 *     `openssl s_client`), data then flows to a plain echo backend; ALPN,
 *     mutual TLS, min_version, session resumption; ALPN/SSL/AUTHORITY TLVs
 *     in the PROXY v2 header sent onward;
 * (b) failed and stalled handshakes: logged once at info with a reason,
 *     counted, closed after `timeouts.handshake` (terminate and passthrough);
 * (c) certificate reload without dropping open connections, and a bad file
 *     rejected on reload while the old certificate keeps serving;
 * (d) `l4lb check` on missing, mismatched and expired certificate files;
 * (e) SNI routes in terminate and passthrough mode; in passthrough the
 *     client completes its handshake with the backend's own certificate,
 *     also with a ClientHello written one byte at a time and one fragmented
 *     over several TLS records;
 * (f) TLS to backends (pool `tls`): verified against a CA, an unknown CA
 *     fails the connect (retried elsewhere), `verify: false` works and warns.
 *
 * Certificates come from scripts/gen-test-certs.sh, generated once into a
 * temporary directory removed at the end. openssl is required: without it the file fails when
 * CI is set, and is otherwise skipped with the reason printed.
 * Deadlines are generous (a noisy 2-core machine); every wait is bounded and
 * every resource is torn down by the test that made it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { PP2_CLIENT_CERT_CONN, PP2_CLIENT_SSL } from '../src/proxy-protocol/index.js';
import { runCli, writeConfig } from './helpers/cli.js';
import { closed, connect, countingEcho, echoes, readLine, sleep, startBackend, startL4lb, waitFor, type Backend, type Running } from './helpers/net.js';
import { proxyBackend, type ProxyBackend } from './helpers/proxy-backend.js';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { captureClientHello } from './helpers/client-hello.js';
import { accessLine, accessLines, backendFor, clientFor, lbFor, namedBackendsFor } from './helpers/lb.js';
import { refusedClient, tlsClient } from './helpers/tls-clients.js';
import { need } from './helpers/requirements.js';

if (need(t, opensslMissing)) main();

function main(): void {
  // -------------------------------------------------------------------------
  // Certificates, once for the whole file

  const { dir, file: f, pair, pem, ca: caPem } = testCerts();
  // A self-signed backend.test certificate from a CA nobody trusts.
  const rogue = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('rogue.key'), '-out', f('rogue.crt'),
      '-subj', '/CN=backend.test', '-addext', 'subjectAltName=DNS:backend.test,IP:127.0.0.1', '-days', '30'],
    { encoding: 'utf8', timeout: 30_000 },
  );
  if (rogue.status !== 0) throw new Error(`rogue certificate: ${rogue.stderr}`);

  // -------------------------------------------------------------------------
  // Helpers

  /** A failed handshake's line: its access line, with termination tls_error and the reason. */
  function failureLines(lb: Running, port: number): Array<Record<string, unknown>> {
    return lb.lines.filter((l) => l.msg === 'connection' && l.termination === 'tls_error' && l.client === `127.0.0.1:${port}`);
  }

  interface TlsBackend extends Backend {
    /** Completed handshakes of connections that sent data (health probes send none), and the SNI each carried (null: none). */
    readonly handshakes: Array<string | null>;
  }

  /** A Node TLS server: writes `name` (if any) after the handshake, then echoes. */
  async function tlsBackend(name: string | null, certName = 'backend.test'): Promise<TlsBackend> {
    const handshakes: Array<string | null> = [];
    const server = tls.createServer({ ...pem(certName) }, (s) => {
      s.once('data', () => handshakes.push(typeof s.servername === 'string' ? s.servername : null));
      s.on('error', () => {});
      if (name !== null) s.write(`${name}\n`);
      s.pipe(s);
    });
    server.on('tlsClientError', () => {});
    const b = await startBackend((s) => server.emit('connection', s));
    return Object.assign(b, { handshakes });
  }

  // ---- openssl s_client

  interface SClient {
    /** Everything s_client printed on stdout until `until` matched. */
    out: string;
    /** Subject CN of the server certificate. */
    cn: string | null;
  }

  /**
   * `openssl s_client -connect 127.0.0.1:PORT [-servername NAME | -noservername] -ign_eof`,
   * `input` on stdin; resolves once stdout matches `until`, then stops it.
   */
  function sClient(t: Test, port: number, sni: string | null, input: string, until: RegExp, extra: string[] = []): Promise<SClient> {
    const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', f('ca.crt'), ...(sni !== null ? ['-servername', sni] : ['-noservername']), '-ign_eof', ...extra];
    const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      const timer = setTimeout(() => finish(new Error(`openssl ${args.join(' ')}: no ${until} within 15s; stdout:\n${out}\nstderr:\n${err}`)), 15_000);
      let settled = false;
      const finish = (e?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        if (e) return reject(e);
        const m = /^subject=.*?CN ?= ?([^,\n]+)/m.exec(out);
        resolve({ out, cn: m ? m[1]!.trim() : null });
      };
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (until.test(out)) finish();
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('exit', (code) => {
        // Let stdout drain: the match may be in the last chunk.
        setTimeout(() => {
          if (until.test(out)) finish();
          else finish(new Error(`openssl ${args.join(' ')} exited (${code}) before ${until}; stdout:\n${out}\nstderr:\n${err}`));
        }, 100);
      });
      child.stdin.on('error', () => {});
      child.stdin.end(input);
    });
  }

  /** Runs openssl to its end (killed after 15s), asynchronously: never spawnSync against the in-process l4lb. */
  function runOpenssl(t: Test, args: string[], input: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
    const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {});
    child.stdin.end(input);
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    return new Promise((resolve) => {
      child.on('close', (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      });
    });
  }

  // ---- clients that shape the ClientHello on the wire

  /**
   * A transport for `tls.connect({ socket })`: a TCP connection to `port`
   * whose first write (the ClientHello record) is replaced by the chunks
   * `shape` returns, written one by one with `gapMs` between them; later
   * writes pass as they are.
   */
  async function shapedTransport(t: Test, port: number, shape: (hello: Buffer) => Buffer[], gapMs = 1): Promise<Duplex & { lport: number }> {
    const raw = await connect(port);
    raw.setNoDelay(true);
    raw.on('error', () => {});
    t.teardown(() => raw.destroy());
    let first = true;
    const duplex = new Duplex({
      read() {
        raw.resume();
      },
      write(chunk: Buffer, _enc, cb) {
        if (!first) {
          raw.write(chunk);
          cb();
          return;
        }
        first = false;
        let parts: Buffer[];
        try {
          parts = shape(chunk);
        } catch (err) {
          cb(err as Error);
          return;
        }
        void (async () => {
          for (const p of parts) {
            if (raw.destroyed) throw new Error('closed while the ClientHello was being written');
            raw.write(p);
            await sleep(gapMs);
          }
        })().then(() => cb(), cb);
      },
      final(cb) {
        raw.end();
        cb();
      },
      destroy(err, cb) {
        raw.destroy();
        cb(err);
      },
    });
    raw.on('data', (d: Buffer) => {
      if (!duplex.push(d)) raw.pause();
    });
    raw.on('end', () => duplex.push(null));
    raw.on('close', () => duplex.destroy());
    return Object.assign(duplex, { lport: raw.localPort! });
  }

  /** The one complete handshake record a TLS client writes first. */
  function oneRecord(hello: Buffer): Buffer {
    if (hello[0] !== 22 || hello.length !== 5 + hello.readUInt16BE(3)) {
      throw new Error(`first write is not exactly one handshake record (${hello.length} bytes, type ${hello[0]})`);
    }
    return hello;
  }

  /** The handshake bytes of one record re-framed into records of at most `size` bytes. */
  function fragment(record: Buffer, size: number): Buffer[] {
    const body = record.subarray(5);
    const out: Buffer[] = [];
    for (let i = 0; i < body.length; i += size) {
      const frag = body.subarray(i, i + size);
      const head = Buffer.from([22, record[1]!, record[2]!, 0, 0]);
      head.writeUInt16BE(frag.length, 3);
      out.push(Buffer.concat([head, frag]));
    }
    return out;
  }

  /** `buf` cut into chunks of `size` bytes. */
  function chunks(buf: Buffer, size: number): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
    return out;
  }

  /** tls.connect over a transport; resolves after the handshake. */
  function tlsOver(t: Test, socket: Duplex, options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ socket, ca: caPem, checkServerIdentity: () => undefined, ...options });
      t.teardown(() => s.destroy());
      const timer = setTimeout(() => reject(new Error('no TLS handshake within 20s')), 20_000);
      s.once('secureConnect', () => {
        clearTimeout(timer);
        s.off('error', reject);
        s.on('error', () => {});
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  function cnOf(socket: tls.TLSSocket): string | undefined {
    const cn = socket.getPeerCertificate().subject?.CN;
    return Array.isArray(cn) ? cn[0] : cn;
  }

  // -------------------------------------------------------------------------
  // (a) Termination

  const SNI_CERTS = [pair('default.test'), pair('a.test'), pair('b.test'), pair('wild.test')];

  t.test('terminate: the certificate is chosen by SNI (openssl s_client), data flows to a plain echo backend', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: SNI_CERTS } }],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const cases: Array<[string | null, string]> = [
      ['a.test', 'a.test'],
      ['b.test', 'b.test'],
      ['B.Test', 'b.test'],
      ['x.wild.test', '*.wild.test'],
      ['other.wild.test', '*.wild.test'],
      [null, 'default.test'],
      ['unknown.test', 'default.test'],
      ['y.x.wild.test', 'default.test'], // certificate wildcards cover one label only
    ];
    for (const [sni, cn] of cases) {
      const line = `hello via ${sni ?? 'no SNI'}`;
      const r = await sClient(t, lb.port(), sni, `${line}\n`, new RegExp(`^${line.replace(/\./g, '\\.')}$`, 'm'));
      t.equal(r.cn, cn, `SNI ${sni ?? '(none)'} gets the ${cn} certificate`);
      t.match(r.out, /Verify return code: 0 \(ok\)/, 'the chain verifies against the test CA');
      t.match(r.out, new RegExp(`^${line}$`, 'm'), `data echoed through the terminated connection (${sni ?? 'no SNI'})`);
    }
    await waitFor(() => accessLines(lb).length >= cases.length, 10_000, 'one access-log line per s_client');
    const snis = accessLines(lb).map((l) => l.sni);
    t.same(new Set(snis), new Set(['a.test', 'b.test', 'x.wild.test', 'other.wild.test', null, 'unknown.test', 'y.x.wild.test']), 'SNI logged (lower-cased)');
    for (const l of accessLines(lb)) {
      t.equal(l.server, echo.address);
      t.ok(typeof l.bytes_in === 'number' && (l.bytes_in as number) > 0, 'bytes_in counts decrypted bytes');
    }
    t.equal(lb.app.listeners[0]!.stats.tlsHandshakeFailures, 0, 'no failed handshake');
  });

  t.test('terminate: ALPN is negotiated, logged and sent in the PROXY v2 ALPN TLV with AUTHORITY and SSL', async (t) => {
    const pp = await backendFor(t, proxyBackend());
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'pp', tls: { mode: 'terminate', certs: SNI_CERTS, alpn: ['redis', 'mqtt'] } }],
      pools: [{ name: 'pp', proxy_protocol: 'v2', servers: [{ address: pp.address }] }],
    });
    const c = await tlsClient(t, lb.port(), { servername: 'a.test', ALPNProtocols: ['mqtt'] });
    t.equal(c.alpnProtocol, 'mqtt', 'the client sees the negotiated protocol');
    t.equal(cnOf(c), 'a.test');
    t.equal(await echoes(c, 'alpn line'), 'alpn line', 'data flows after the PROXY header');
    const conn = await pp.waitForConn((x) => x.remotePort !== 0 && x.header?.source?.port === c.lport, 10_000, 'the proxied connection');
    const tlvs = conn.header!.tlvs;
    t.equal(tlvs.alpn, 'mqtt', 'ALPN TLV');
    t.equal(tlvs.authority, 'a.test', 'AUTHORITY TLV carries the SNI');
    t.ok(tlvs.ssl, 'SSL TLV present');
    t.equal(tlvs.ssl!.client & PP2_CLIENT_SSL, PP2_CLIENT_SSL, 'PP2_CLIENT_SSL set');
    t.equal(tlvs.ssl!.client & PP2_CLIENT_CERT_CONN, 0, 'no client certificate');
    t.not(tlvs.ssl!.verify, 0, 'verify is non-zero without a verified client certificate');
    t.equal(tlvs.ssl!.version, c.getProtocol(), 'SSL version sub-TLV');
    t.equal(tlvs.ssl!.cipher, c.getCipher().standardName, 'SSL cipher sub-TLV');
    t.equal(tlvs.ssl!.cn, undefined, 'no CN without a client certificate');
    c.end();
    const line = await accessLine(lb, c.lport);
    t.equal(line.alpn, 'mqtt', 'alpn logged');
    t.equal(line.sni, 'a.test', 'sni logged');
    t.notOk('client_cn' in line, 'no client_cn without a client certificate');

    // A client that offers no ALPN: none negotiated, none logged, no ALPN TLV.
    const none = await tlsClient(t, lb.port(), { servername: 'b.test' });
    t.equal(none.alpnProtocol, false, 'a client offering no ALPN gets none');
    t.equal(await echoes(none, 'no alpn'), 'no alpn');
    none.end();
    const noneLine = await accessLine(lb, none.lport);
    t.equal(noneLine.alpn, null, 'alpn logged as null when none was negotiated');
    const noneConn = await pp.waitForConn((x) => x.header?.source?.port === none.lport);
    t.equal(noneConn.header!.tlvs.alpn, undefined, 'no ALPN TLV when none was negotiated');
  });

  t.test('terminate: half-close passes through a terminated connection', async (t) => {
    // The backend answers only once the client's FIN has reached it.
    const backend = await backendFor(
      t,
      startBackend(
        (s) => {
          let got = '';
          s.on('data', (d: Buffer) => (got += d.toString()));
          s.on('end', () => s.end(`got ${JSON.stringify(got)} then FIN\n`));
        },
        { allowHalfOpen: true },
      ),
    );
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'b', tls: { mode: 'terminate', certs: SNI_CERTS } }],
      pools: [{ name: 'b', servers: [{ address: backend.address }] }],
    });
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      // allowHalfOpen is honoured by tls.connect (passed on to the socket) but missing from its type.
      const c = await tlsClient(t, lb.port(), { servername: 'a.test', maxVersion, allowHalfOpen: true } as tls.ConnectionOptions);
      c.end('last words');
      t.equal(await readLine(c, 10_000), 'got "last words" then FIN', `${maxVersion}: the reply to a half-closed client still arrives`);
      await closed(c, 10_000);
      const line = await accessLine(lb, c.lport);
      t.equal(line.termination, 'client_close', `${maxVersion}: client_close`);
    }
  });

  t.test('terminate: with client_ca a signed client certificate is accepted, its CN logged and sent on; none, or one from another CA, is refused', async (t) => {
    const pp = await backendFor(t, proxyBackend());
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        { name: 'mtls', bind: '127.0.0.1:0', pool: 'pp', tls: { mode: 'terminate', certs: SNI_CERTS, client_ca: f('client-ca.crt') } },
      ],
      pools: [{ name: 'pp', proxy_protocol: 'v2', servers: [{ address: pp.address }] }],
    });
    const stats = lb.app.listeners[0]!.stats;

    const good = await tlsClient(t, lb.port(), { servername: 'a.test', ...pem('client1') });
    t.equal(await echoes(good, 'with client1'), 'with client1', 'client1 (signed by client_ca) is accepted');
    const conn = await pp.waitForConn((x) => x.header?.source?.port === good.lport);
    const ssl = conn.header!.tlvs.ssl!;
    t.equal(ssl.cn, 'client1', 'SSL TLV CN sub-TLV');
    t.equal(ssl.verify, 0, 'verify 0: a client certificate was presented and verified');
    t.equal(ssl.client & (PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN), PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 'PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN');
    good.end();
    const goodLine = await accessLine(lb, good.lport);
    t.equal(goodLine.client_cn, 'client1', 'client_cn logged');
    t.equal(goodLine.termination, 'client_close');

    const before = stats.tlsHandshakeFailures;
    // Health probes connect too (with a LOCAL header); clients come with PROXY.
    const proxied = (): number => pp.conns.filter((c) => c.header?.command === 'PROXY').length;
    const backendConns = proxied();
    const none = await refusedClient(t, lb.port(), { servername: 'a.test' });
    t.equal(none.echoed, '', 'no client certificate: nothing echoed');
    const noneLine = await accessLine(lb, none.lport);
    t.equal(noneLine.termination, 'tls_error', 'no client certificate: tls_error');
    t.equal(noneLine.server, null, 'no backend reached');

    const wrong = await refusedClient(t, lb.port(), { servername: 'a.test', ...pem('client-wrongca') });
    t.equal(wrong.echoed, '', 'certificate from another CA: nothing echoed');
    const wrongLine = await accessLine(lb, wrong.lport);
    t.equal(wrongLine.termination, 'tls_error', 'certificate from another CA: tls_error');
    t.equal(stats.tlsHandshakeFailures, before + 2, 'both refusals counted');
    for (const [what, lport, reason] of [
      ['no client certificate', none.lport, /CERTIFICATE/i],
      // OpenSSL's verify error, e.g. SELF_SIGNED_CERT_IN_CHAIN or UNABLE_TO_VERIFY_LEAF_SIGNATURE.
      ['certificate from another CA', wrong.lport, /^client certificate refused: [A-Z_]+$/],
    ] as const) {
      const failed = failureLines(lb, lport);
      t.equal(failed.length, 1, `${what}: logged once`);
      t.equal(failed[0]?.level, 'info', `${what}: at info`);
      t.match(String(failed[0]?.reason), reason, `${what}: with the reason (${failed[0]?.reason})`);
    }
    t.equal(proxied(), backendConns, 'refused clients never reach a backend');
  });

  t.test('terminate: min_version TLSv1.3 refuses a TLS 1.2-only client; the default refuses TLS 1.1', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        { name: 'v13', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: SNI_CERTS, min_version: 'TLSv1.3' } },
        { name: 'default', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: SNI_CERTS } },
      ],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const r = await refusedClient(t, lb.port('v13'), { servername: 'a.test', maxVersion: 'TLSv1.2' });
    t.match(r.error, /ALERT_PROTOCOL_VERSION|PROTOCOL|VERSION/i, `the client is told why (${r.error})`);
    const line = await accessLine(lb, r.lport);
    t.equal(line.termination, 'tls_error');
    t.equal(lb.app.listeners[0]!.stats.tlsHandshakeFailures, 1, 'counted');
    const ok13 = await tlsClient(t, lb.port('v13'), { servername: 'a.test' });
    t.equal(ok13.getProtocol(), 'TLSv1.3');
    t.equal(await echoes(ok13, 'tls13'), 'tls13');
    const ok12 = await tlsClient(t, lb.port('default'), { servername: 'a.test', maxVersion: 'TLSv1.2' });
    t.equal(ok12.getProtocol(), 'TLSv1.2', 'the default min_version accepts TLS 1.2');
    t.equal(await echoes(ok12, 'tls12'), 'tls12');

    // TLS 1.1 under the default min_version (TLSv1.2), with openssl s_client.
    const help = spawnSync('openssl', ['s_client', '-help'], { encoding: 'utf8', timeout: 10_000 });
    if (!/-tls1_1\b/.test(`${help.stdout}${help.stderr}`)) {
      const reason = 'this openssl s_client has no -tls1_1';
      console.error(`# skipping the TLS 1.1 check: ${reason}`);
      t.comment(`skipped the TLS 1.1 check: ${reason}`);
      return;
    }
    const failures = lb.app.listeners[1]!.stats.tlsHandshakeFailures;
    // Asynchronously: l4lb runs in this very process.
    const child = await runOpenssl(
      t,
      ['s_client', '-connect', `127.0.0.1:${lb.port('default')}`, '-servername', 'a.test', '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'],
      'x\n',
    );
    const out = `${child.stdout}${child.stderr}`;
    // The client's own refusal (e.g. a build or policy without TLS 1.1): nothing was tested.
    if (/no protocols available/i.test(out)) {
      const reason = 'this openssl cannot offer TLS 1.1 at all';
      console.error(`# skipping the TLS 1.1 check: ${reason}`);
      t.comment(`skipped the TLS 1.1 check: ${reason}`);
      return;
    }
    t.not(child.status, 0, 's_client -tls1_1 fails');
    t.notMatch(out, /Cipher is (?!\(NONE\))/, 'no cipher negotiated');
    await waitFor(() => lb.app.listeners[1]!.stats.tlsHandshakeFailures === failures + 1, 10_000, 'the TLS 1.1 refusal to be counted');
    // A worker thread's line reaches the log a moment after the count.
    const refusedLines = (): Array<Record<string, unknown>> => lb.lines.filter((l) => l.msg === 'connection' && l.termination === 'tls_error' && l.listener === 'default');
    await waitFor(() => refusedLines().length > 0, 5_000, 'the refusal to be logged');
    await sleep(100);
    const refused = refusedLines();
    t.equal(refused.length, 1, 'logged once');
    t.match(String(refused[0]!.reason), /protocol|version/i, `with the reason (${refused[0]!.reason})`);
  });

  t.test('terminate: sessions resume over TLS 1.2 and 1.3, with SNI and with mutual TLS', async (t) => {
    const echo = await backendFor(t);
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        { name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: SNI_CERTS } },
        { name: 'mtls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: SNI_CERTS, client_ca: f('client-ca.crt') } },
      ],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const cases: Array<[string, string, tls.ConnectionOptions]> = [
      ['TLS 1.3', 'tls', {}],
      ['TLS 1.2', 'tls', { maxVersion: 'TLSv1.2' }],
      ['TLS 1.3, SNI b.test', 'tls', { servername: 'b.test' }],
      ['TLS 1.3, mutual TLS', 'mtls', pem('client1')],
      ['TLS 1.2, mutual TLS', 'mtls', { maxVersion: 'TLSv1.2', ...pem('client1') }],
    ];
    for (const [what, listener, options] of cases) {
      const opts: tls.ConnectionOptions = { servername: 'a.test', ...options };
      const first = await tlsClient(t, lb.port(listener), opts);
      t.equal(await echoes(first, 'first'), 'first');
      // TLS 1.2 tickets come within the handshake, TLS 1.3 ones after it.
      await waitFor(() => first.sessions.length > 0, 10_000, `${what}: a session ticket`);
      const saved = first.sessions.at(-1)!;
      t.equal(first.isSessionReused(), false, `${what}: the first connection is a full handshake`);
      first.end();
      await closed(first, 10_000);
      const second = await tlsClient(t, lb.port(listener), { ...opts, session: saved });
      t.equal(second.isSessionReused(), true, `${what}: the second connection resumes the first's session`);
      t.equal(await echoes(second, 'second'), 'second', `${what}: data flows on the resumed connection`);
      if (listener === 'mtls') {
        second.end();
        const line = await accessLine(lb, second.lport, 10_000, listener);
        t.equal(line.client_cn, 'client1', `${what}: the client CN is known on a resumed session too`);
      }
    }
    t.equal(lb.app.listeners[0]!.stats.tlsHandshakeFailures + lb.app.listeners[1]!.stats.tlsHandshakeFailures, 0, 'no failed handshake');
  });

  // -------------------------------------------------------------------------
  // (b) Failed and stalled handshakes

  t.test('a failed handshake is logged once at info with a reason, counted, and nothing crashes', async (t) => {
    const echo = await backendFor(t, countingEcho());
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        { name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: SNI_CERTS } },
        { name: 'pass', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'passthrough' } },
      ],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const stats = lb.app.listeners[0]!.stats;
    const c = await clientFor(t, lb.port());
    c.write('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await closed(c, 10_000);
    const line = await accessLine(lb, c.lport);
    t.equal(line.termination, 'tls_error', 'access log: tls_error');
    t.equal(line.server, null);
    await sleep(100);
    const failed = failureLines(lb, c.lport);
    t.equal(failed.length, 1, 'logged exactly once');
    t.equal(failed[0]!.level, 'info', 'at info');
    t.type(failed[0]!.reason, 'string', `with a reason (${failed[0]!.reason})`);
    t.equal(stats.tlsHandshakeFailures, 1, 'counted');

    // Clients that go away in the middle of their ClientHello (reset, or FIN)
    // are failed handshakes; clients that send nothing at all (TCP health
    // checks, port scans) are plain client_close. Same in both modes.
    const partial = Buffer.from([22, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3]);
    for (const [i, name] of ['tls', 'pass'].entries()) {
      const s = lb.app.listeners[i]!.stats;
      for (const [what, bytes, how, termination] of [
        ['reset mid-ClientHello', partial, 'reset', 'tls_error'],
        ['FIN mid-ClientHello', partial, 'end', 'tls_error'],
        ['reset before any byte', null, 'reset', 'client_close'],
        ['FIN before any byte', null, 'end', 'client_close'],
      ] as const) {
        const before = s.tlsHandshakeFailures;
        const x = await clientFor(t, lb.port(name));
        if (bytes !== null) x.write(bytes);
        await sleep(50);
        if (how === 'reset') x.resetAndDestroy();
        else x.end();
        const ms = await closed(x, 10_000);
        const l = await accessLine(lb, x.lport);
        t.equal(l.termination, termination, `${name}, ${what}: ${termination}`);
        t.ok(ms < 2_000, `${name}, ${what}: closed at once (${ms}ms), not at the handshake deadline`);
        t.equal(s.tlsHandshakeFailures, before + (termination === 'tls_error' ? 1 : 0), `${name}, ${what}: ${termination === 'tls_error' ? 'counted' : 'not counted'}`);
        t.equal(failureLines(lb, x.lport).length, termination === 'tls_error' ? 1 : 0, `${name}, ${what}: ${termination === 'tls_error' ? 'logged once' : 'not logged'}`);
      }
    }

    // Still serving.
    const ok = await tlsClient(t, lb.port(), { servername: 'a.test' });
    t.equal(await echoes(ok, 'still up'), 'still up', 'a good client is served after the failures');
    await waitFor(() => lb.app.listeners[0]!.connections === 1, 10_000, 'only the good connection to be open');
    t.equal(echo.received, 'still up\n'.length, 'no byte of a failed handshake reached the backend');
  });

  t.test('1,000 aborted handshakes: no crash, no leaked sockets, the failures counted', async (t) => {
    const echo = await backendFor(t, countingEcho());
    const lb = await lbFor(t, {
      log: { level: 'info', access: false },
      listeners: [
        { name: 'term', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: SNI_CERTS } },
        { name: 'pass', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'passthrough' } },
      ],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const fds = (): number => readdirSync('/proc/self/fd').length;
    // One real handshake first, so lazily opened files (OpenSSL's) are in the baseline.
    const warm = await tlsClient(t, lb.port('term'), { servername: 'a.test' });
    t.equal(await echoes(warm, 'warm'), 'warm');
    warm.destroy();
    await waitFor(() => lb.app.connections === 0, 10_000, 'the warm-up connection to close');
    const baseline = fds();
    const N = 1_000;
    // The start of a ClientHello; each client sends 1..44 bytes of it, then resets or closes.
    const hello = Buffer.from([22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3, ...new Array<number>(33).fill(7)]);
    const listeners = [lb.app.listeners[0]!.stats, lb.app.listeners[1]!.stats];
    const accepted = (): number => listeners.reduce((n, s) => n + s.accepted, 0);
    const acceptedBefore = accepted();
    const started = Date.now();
    for (let i = 0; i < N; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, N - i) }, async (_, j) => {
          const k = i + j;
          const s = await connect(k % 2 === 0 ? lb.port('term') : lb.port('pass'));
          s.on('error', () => {});
          s.write(hello.subarray(0, 1 + (k % hello.length)));
          return s;
        }),
      );
      // Abort only once l4lb holds them: a connection already reset when it
      // is accepted has no peer address any more and is a plain client_close.
      await waitFor(() => accepted() >= acceptedBefore + i + batch.length, 10_000, 'l4lb to accept the batch');
      batch.forEach((s, j) => ((i + j) % 3 === 0 ? s.destroy() : s.resetAndDestroy()));
    }
    const count = (what: 'tls_error' | 'client_close'): number => listeners.reduce((n, s) => n + (s.terminations.get(what) ?? 0), 0);
    // The warm-up connection is the one client_close that is not an aborted handshake.
    await waitFor(() => count('tls_error') + count('client_close') >= N + 1, 30_000, `${N} aborted handshakes to be closed`);
    const failures = listeners.reduce((n, s) => n + s.tlsHandshakeFailures, 0);
    t.equal(count('tls_error') + count('client_close'), N + 1, `every aborted handshake closed (${Date.now() - started}ms)`);
    t.equal(failures, N, 'every aborted handshake (each had sent bytes) is a counted failure');
    t.equal(count('tls_error'), N, 'and a tls_error');
    await waitFor(() => lb.app.connections === 0, 10_000, 'every session to close');
    await waitFor(() => fds() <= baseline + 2, 10_000, 'open files back to the baseline').catch(() => undefined);
    t.ok(fds() <= baseline + 2, `open files back to the baseline (${baseline} → ${fds()})`);
    t.equal(echo.received, 'warm\n'.length, 'nothing but the warm-up reached the backend');
    const ok = await tlsClient(t, lb.port('term'), { servername: 'b.test' });
    t.equal(await echoes(ok, 'after'), 'after', 'still serving');
  });

  t.test('a silent client is closed after timeouts.handshake, in terminate and passthrough mode', async (t) => {
    const echo = await backendFor(t, countingEcho());
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        { name: 'term', bind: '127.0.0.1:0', pool: 'echo', timeouts: { handshake: '300ms' }, tls: { mode: 'terminate', certs: SNI_CERTS } },
        { name: 'pass', bind: '127.0.0.1:0', pool: 'echo', timeouts: { handshake: '300ms' }, tls: { mode: 'passthrough' } },
      ],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    for (const [i, name] of ['term', 'pass'].entries()) {
      // Silent from the start, and stalled in the middle of a ClientHello.
      for (const first of [Buffer.alloc(0), Buffer.from([22, 3, 1, 0, 100, 1, 0])]) {
        const what = `${name}, ${first.length === 0 ? 'silent' : 'stalled mid-ClientHello'}`;
        const before = lb.app.listeners[i]!.stats.tlsHandshakeFailures;
        const c = await clientFor(t, lb.port(name));
        if (first.length > 0) c.write(first);
        const ms = await closed(c, 10_000);
        t.ok(ms >= 250, `${what}: not closed before the timeout (${ms}ms)`);
        t.ok(ms < 3_000, `${what}: closed soon after 300ms (${ms}ms)`);
        const line = await accessLine(lb, c.lport);
        t.equal(line.termination, 'tls_error', `${what}: tls_error`);
        const failed = failureLines(lb, c.lport);
        t.equal(failed.length, 1, `${what}: logged once`);
        t.match(String(failed[0]!.reason), /timeout after 300ms/, `${what}: the reason names the timeout`);
        t.equal(lb.app.listeners[i]!.stats.tlsHandshakeFailures, before + 1, `${what}: counted`);
      }
    }
    t.equal(echo.received, 0, 'nothing reached the backend');
  });

  t.test('accept_proxy: the PROXY header is read before the TLS handshake, under the same deadline', async (t) => {
    const echo = await backendFor(t, countingEcho());
    const pp = await backendFor(t, proxyBackend({ echo: false }));
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        { name: 'term', bind: '127.0.0.1:0', pool: 'echo', accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], timeouts: { handshake: '1s' }, tls: { mode: 'terminate', certs: SNI_CERTS } },
        { name: 'pass', bind: '127.0.0.1:0', pool: 'echo', accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], tls: { mode: 'passthrough' }, routes: [{ sni: 'pp.test', pool: 'pp' }] },
      ],
      pools: [
        { name: 'echo', servers: [{ address: echo.address }] },
        { name: 'pp', proxy_protocol: 'v2', servers: [{ address: pp.address }] },
      ],
    });
    const header = (port: number, clientPort: number): string => `PROXY TCP4 203.0.113.7 127.0.0.1 ${clientPort} ${port}\r\n`;

    // Terminate: header (in two pieces), then a TLS handshake on the same connection.
    const raw = await clientFor(t, lb.port('term'));
    const h = header(lb.port('term'), 4242);
    raw.write(h.slice(0, 9));
    await sleep(50);
    raw.write(h.slice(9));
    const c = await tlsOver(t, raw, { servername: 'a.test' });
    t.equal(cnOf(c), 'a.test', 'the handshake after the header picks the certificate by SNI');
    t.equal(await echoes(c, 'behind a proxy'), 'behind a proxy');
    c.end();
    const line = await accessLine(lb, '203.0.113.7:4242');
    t.equal(line.sni, 'a.test', 'the header\'s client is the one logged, with the SNI');
    t.equal(line.bytes_in, 'behind a proxy\n'.length, 'bytes_in: decrypted bytes, no header');

    // Header and ClientHello in one segment: the bytes after the header go to the handshake.
    const joined = await shapedTransport(t, lb.port('term'), (hello) => [Buffer.concat([Buffer.from(header(lb.port('term'), 4545)), hello])]);
    const j = await tlsOver(t, joined, { servername: 'b.test' });
    t.equal(cnOf(j), 'b.test', 'header and ClientHello in one segment: handshake completes');
    t.equal(await echoes(j, 'joined'), 'joined');
    j.end();
    t.equal((await accessLine(lb, '203.0.113.7:4545')).sni, 'b.test');

    // One deadline for both: a header after 700ms leaves the handshake 300ms.
    const slow = await clientFor(t, lb.port('term'));
    await sleep(700);
    slow.write(header(lb.port('term'), 4343));
    const ms = await closed(slow, 10_000);
    t.ok(ms >= 200 && ms < 1_200, `closed at the one deadline, 1s after accept, not 1s after the header (${ms + 700}ms in all)`);
    const slowLine = await accessLine(lb, '203.0.113.7:4343');
    t.equal(slowLine.termination, 'tls_error', 'a handshake that never came is a tls_error');

    // Passthrough: header, then a ClientHello; the header sent onward names the header's client and the SNI.
    const p = await clientFor(t, lb.port('pass'));
    const hello = await captureClientHello({ servername: 'pp.test' });
    p.write(Buffer.concat([Buffer.from(header(lb.port('pass'), 4444)), hello]));
    const conn = await pp.waitForConn((x) => x.header?.source?.port === 4444 && x.data.length >= hello.length, 10_000, 'the forwarded ClientHello');
    t.equal(conn.header!.source!.address, '203.0.113.7', 'the header sent onward carries the incoming header\'s client');
    t.equal(conn.header!.tlvs.authority, 'pp.test', 'and the SNI');
    t.ok(conn.data.equals(hello), 'the ClientHello follows unchanged (the incoming header is not forwarded)');
    t.equal(echo.received, 'behind a proxy\njoined\n'.length, 'nothing else reached the default pool');
  });

  // -------------------------------------------------------------------------
  // (c) Certificate reload

  t.test('certificate reload: open connections keep working, new handshakes get the new certificate, a bad file is refused', async (t) => {
    const echo = await backendFor(t);
    const live = join(dir, 'live');
    mkdirSync(live, { recursive: true });
    const liveCrt = join(live, 'server.crt');
    const liveKey = join(live, 'server.key');
    copyFileSync(f('default.test.crt'), liveCrt);
    copyFileSync(f('default.test.key'), liveKey);
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: [{ cert: liveCrt, key: liveKey }] } }],
      pools: [{ name: 'echo', servers: [{ address: echo.address }] }],
    });
    const listener = lb.app.listeners[0]!;
    // What SIGHUP does: the same configuration again, its files re-read by every serving thread.
    const reloadCertificates = (): Promise<unknown> => lb.app.reload(lb.app.model);
    const open = await tlsClient(t, lb.port());
    t.equal(cnOf(open), 'default.test', 'served the original certificate');
    t.equal(await echoes(open, 'before reload'), 'before reload');

    copyFileSync(f('b.test.crt'), liveCrt);
    copyFileSync(f('b.test.key'), liveKey);
    await reloadCertificates();
    t.equal(await echoes(open, 'after reload'), 'after reload', 'the open connection keeps working');
    const fresh = await tlsClient(t, lb.port());
    t.equal(cnOf(fresh), 'b.test', 'a new handshake sees the new certificate');
    t.equal(await echoes(fresh, 'fresh'), 'fresh');
    const r = await sClient(t, lb.port(), null, 'via openssl\n', /^via openssl$/m);
    t.equal(r.cn, 'b.test', 'openssl s_client sees the new certificate too');

    // A key that is not PEM, then a key that does not match: refused, the current certificate stays.
    writeFileSync(liveKey, 'not a key\n');
    await t.rejects(reloadCertificates(), { name: 'ConfigError', message: /certs\[0\]\.key/ }, 'a garbage key is refused');
    copyFileSync(f('a.test.key'), liveKey);
    await t.rejects(reloadCertificates(), { message: /does not match/ }, 'a key for another certificate is refused');
    writeFileSync(liveCrt, '');
    await t.rejects(reloadCertificates(), { message: /certs\[0\]\.cert/ }, 'an empty certificate file is refused');
    const still = await tlsClient(t, lb.port());
    t.equal(cnOf(still), 'b.test', 'after failed reloads the last good certificate still serves');
    t.equal(await echoes(still, 'still'), 'still');
    t.equal(await echoes(open, 'still open'), 'still open', 'the first connection is still open');
    t.equal(listener.stats.tlsHandshakeFailures, 0);
  });

  // -------------------------------------------------------------------------
  // (d) `l4lb check`

  t.test('l4lb check refuses missing certificate and key files and a mismatched key, and warns on an expired certificate and verify: false', async (t) => {
    const echo = { address: '127.0.0.1:9' };
    const withCerts = (certs: unknown, pool: Record<string, unknown> = {}) => ({
      listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'p', tls: { mode: 'terminate', certs } }],
      pools: [{ name: 'p', servers: [{ address: echo.address }], ...pool }],
    });
    const check = (config: unknown): ReturnType<typeof runCli> => {
      const { file, cleanup } = writeConfig(config);
      try {
        return runCli(['check', '--config', file]);
      } finally {
        cleanup();
      }
    };

    const missing = check(withCerts([{ cert: f('nope.crt'), key: f('a.test.key') }]));
    t.equal(missing.status, 1, 'missing certificate file: exit 1');
    t.match(missing.stdout + missing.stderr, /listeners\[0\]\.tls\.certs\[0\]\.cert/, 'names the path');
    t.match(missing.stdout + missing.stderr, /nope\.crt/, 'names the file');

    const missingKey = check(withCerts([pair('default.test'), { cert: f('a.test.crt'), key: f('nope.key') }]));
    t.equal(missingKey.status, 1, 'missing key file: exit 1');
    t.match(missingKey.stdout + missingKey.stderr, /listeners\[0\]\.tls\.certs\[1\]\.key/, 'names the path');

    const mismatch = check(withCerts([{ cert: f('a.test.crt'), key: f('b.test.key') }]));
    t.equal(mismatch.status, 1, 'key not matching the certificate: exit 1');
    t.match(mismatch.stdout + mismatch.stderr, /listeners\[0\]\.tls\.certs\[0\]\.key/, 'names the path');
    t.match(mismatch.stdout + mismatch.stderr, /does not match/, 'says why');
    t.notMatch(mismatch.stdout + mismatch.stderr, /PRIVATE KEY/, 'no key material in the message');

    const expired = check(withCerts([pair('default.test'), pair('expired.test')]));
    t.equal(expired.status, 0, `expired certificate: exit 0 (${expired.stderr})`);
    t.match(expired.stderr, /warning: .*listeners\[0\]\.tls\.certs\[1\]\.cert.*expired/, 'prints a warning naming it');

    const noVerify = check(withCerts([pair('default.test')], { tls: { verify: false } }));
    t.equal(noVerify.status, 0, 'verify: false: exit 0');
    t.match(noVerify.stderr, /warning: pools\[0\]\.tls\.verify/, 'verify: false prints a warning');

    // The same checks in process: the running instance refuses to start.
    await t.rejects(startL4lb(withCerts([{ cert: f('a.test.crt'), key: f('b.test.key') }])), { message: /does not match/ }, 'start refuses a mismatched key');
  });

  // -------------------------------------------------------------------------
  // (e) SNI routes, passthrough

  t.test('routes: terminate mode sends a.test to pool A, b.test to pool B, the rest to the listener pool', async (t) => {
    const [A, B, D] = await namedBackendsFor(t, ['A', 'B', 'D']);
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        {
          name: 'tls',
          bind: '127.0.0.1:0',
          pool: 'D',
          tls: { mode: 'terminate', certs: SNI_CERTS },
          routes: [
            { sni: 'a.test', pool: 'A' },
            { sni: 'b.test', pool: 'B' },
            { sni: '*.wild.test', pool: 'B' },
          ],
        },
      ],
      pools: [
        { name: 'A', servers: [{ address: A.address }] },
        { name: 'B', servers: [{ address: B.address }] },
        { name: 'D', servers: [{ address: D.address }] },
      ],
    });
    const cases: Array<[string | undefined, string, string]> = [
      ['a.test', 'A', 'a.test'],
      ['B.TEST', 'B', 'b.test'],
      ['x.wild.test', 'B', '*.wild.test'],
      ['c.test', 'D', 'default.test'],
      [undefined, 'D', 'default.test'],
    ];
    for (const [sni, pool, cn] of cases) {
      const c = await tlsClient(t, lb.port(), sni !== undefined ? { servername: sni } : {});
      t.equal(cnOf(c), cn, `${sni ?? 'no SNI'}: certificate ${cn}`);
      t.equal(await readLine(c, 10_000), pool, `${sni ?? 'no SNI'} → pool ${pool}`);
      c.end();
      const line = await accessLine(lb, c.lport);
      t.equal(line.pool, pool, `${sni ?? 'no SNI'}: pool logged`);
      t.equal(line.sni, sni?.toLowerCase() ?? null, `${sni ?? 'no SNI'}: sni logged`);
    }
  });

  t.test('passthrough routes by SNI: the client sees the backend certificate, the SNI goes on as an AUTHORITY TLV, shaped ClientHellos pass, garbage is refused', async (t) => {
    const [PA, PB, PD] = await Promise.all([backendFor(t, tlsBackend('PA')), backendFor(t, tlsBackend('PB')), backendFor(t, tlsBackend('PD'))]);
    const pp = await backendFor(t, proxyBackend({ echo: false }));
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        {
          name: 'pass',
          bind: '127.0.0.1:0',
          pool: 'PD',
          timeouts: { handshake: '20s' },
          tls: { mode: 'passthrough' },
          routes: [
            { sni: 'a.test', pool: 'PA' },
            { sni: 'b.test', pool: 'PB' },
            { sni: 'pp.test', pool: 'PP' },
          ],
        },
      ],
      // Probes an hour apart: the backends' accept counts are the clients' alone.
      pools: [
        { name: 'PA', servers: [{ address: PA.address }], health: { interval: '1h' } },
        { name: 'PB', servers: [{ address: PB.address }], health: { interval: '1h' } },
        { name: 'PD', servers: [{ address: PD.address }], health: { interval: '1h' } },
        { name: 'PP', proxy_protocol: 'v2', servers: [{ address: pp.address }], health: { interval: '1h' } },
      ],
    });
    const stats = lb.app.listeners[0]!.stats;

    await t.test('each SNI reaches its pool, the client sees the backend certificate, and the SNI is logged', async (t) => {
      const cases: Array<[string | undefined, string, TlsBackend]> = [
        ['a.test', 'PA', PA],
        ['B.Test', 'PB', PB],
        ['c.test', 'PD', PD],
        [undefined, 'PD', PD],
      ];
      for (const [sni, name, backend] of cases) {
        const c = await tlsClient(t, lb.port(), sni !== undefined ? { servername: sni } : {});
        t.equal(cnOf(c), 'backend.test', `${sni ?? 'no SNI'}: the client sees the backend's own certificate`);
        t.equal(c.authorized, true, 'and it verifies against the test CA');
        t.equal(await readLine(c, 10_000), name, `${sni ?? 'no SNI'} → ${name}`);
        t.equal(await echoes(c, `data for ${name}`), `data for ${name}`, 'data flows end to end');
        t.equal(backend.handshakes.at(-1), sni ?? null, 'the backend got the SNI unchanged');
        c.end();
        const line = await accessLine(lb, c.lport);
        t.equal(line.sni, sni?.toLowerCase() ?? null, `${sni ?? 'no SNI'}: sni logged`);
        t.equal(line.pool, name);
        t.notOk('alpn' in line, 'no alpn field: TLS is not terminated here');
      }
    });

    await t.test('PROXY v2 AUTHORITY TLV carries the SNI; the ClientHello follows the header unchanged', async (t) => {
      const raw = await clientFor(t, lb.port());
      // A real ClientHello, captured from a Node client against a plain server.
      const hello = await captureClientHello({ servername: 'pp.test' });
      raw.write(hello);
      const conn = await pp.waitForConn((c) => c.header?.source?.port === raw.lport && c.data.length >= hello.length, 10_000, 'the header and the ClientHello');
      t.equal(conn.header!.version, 2);
      t.equal(conn.header!.tlvs.authority, 'pp.test', 'AUTHORITY TLV');
      t.equal(conn.header!.tlvs.ssl, undefined, 'no SSL TLV: TLS is not terminated here');
      t.equal(conn.header!.tlvs.alpn, undefined, 'no ALPN TLV in passthrough');
      t.ok(conn.data.equals(hello), 'the ClientHello bytes are forwarded unchanged');
    });

    await t.test('a ClientHello written one byte at a time is routed and the handshake completes', async (t) => {
      let helloBytes = 0;
      const transport = await shapedTransport(t, lb.port(), (hello) => {
        helloBytes = oneRecord(hello).length;
        return chunks(hello, 1);
      });
      const c = await tlsOver(t, transport, { servername: 'a.test' });
      t.ok(helloBytes > 100, `${helloBytes} single-byte writes`);
      t.equal(cnOf(c), 'backend.test');
      t.equal(await readLine(c, 10_000), 'PA', 'routed on the SNI');
      t.equal(await echoes(c, 'slow'), 'slow');
      c.end();
      const line = await accessLine(lb, transport.lport);
      t.equal(line.sni, 'a.test');
    });

    await t.test('a ClientHello larger than one TLS record (fragmented over several records, record headers split) is routed and the handshake completes', async (t) => {
      let records = 0;
      let size = 0;
      const transport = await shapedTransport(
        t,
        lb.port(),
        (hello) => {
          const frags = fragment(oneRecord(hello), 400);
          records = frags.length;
          size = hello.length;
          // Cut the records across write boundaries too (record headers split between segments).
          return chunks(Buffer.concat(frags), 173);
        },
        5,
      );
      // Many long ALPN entries make the ClientHello larger than 1.5 KB (like post-quantum key shares).
      const alpn = Array.from({ length: 12 }, (_, i) => `proto-${i}-${'x'.repeat(180)}`);
      const c = await tlsOver(t, transport, { servername: 'b.test', ALPNProtocols: alpn });
      t.ok(size > 1_500, `ClientHello of ${size} bytes`);
      t.ok(records >= 4, `sent as ${records} records`);
      t.equal(await readLine(c, 10_000), 'PB', 'routed on the SNI');
      t.equal(await echoes(c, 'big'), 'big');
      c.end();
      const line = await accessLine(lb, transport.lport);
      t.equal(line.sni, 'b.test');
    });

    await t.test('bytes that are not TLS close with tls_error', async (t) => {
      const accepted = PA.accepted + PB.accepted + PD.accepted + pp.accepted;
      const failures = stats.tlsHandshakeFailures;
      for (const junk of ['GET / HTTP/1.1\r\nHost: a.test\r\n\r\n', 'SSH-2.0-OpenSSH_9.6\r\n', '\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00']) {
        const c = await clientFor(t, lb.port());
        c.write(junk);
        await closed(c, 10_000);
        const line = await accessLine(lb, c.lport);
        t.equal(line.termination, 'tls_error', `${JSON.stringify(junk.slice(0, 12))}: tls_error`);
        t.equal(failureLines(lb, c.lport).length, 1, 'logged once');
      }
      t.equal(stats.tlsHandshakeFailures, failures + 3, 'counted');
      t.equal(PA.accepted + PB.accepted + PD.accepted + pp.accepted, accepted, 'no backend was contacted');
    });
  });

  // -------------------------------------------------------------------------
  // (f) TLS to backends

  t.test('TLS to backends: verified against ca, unknown CA fails the connect and is retried, verify: false works and warns', async (t) => {
    const good = await backendFor(t, tlsBackend(null));
    const untrusted = await backendFor(t, tlsBackend(null, 'rogue'));
    const lb = await lbFor(t, {
      log: { level: 'debug', access: true },
      listeners: [
        { name: 'good', bind: '127.0.0.1:0', pool: 'good' },
        { name: 'by-ip', bind: '127.0.0.1:0', pool: 'by-ip' },
        { name: 'mixed', bind: '127.0.0.1:0', pool: 'mixed' },
        { name: 'rogue', bind: '127.0.0.1:0', pool: 'rogue' },
        { name: 'noverify', bind: '127.0.0.1:0', pool: 'noverify' },
      ],
      pools: [
        { name: 'good', tls: { servername: 'backend.test', ca: f('ca.crt') }, servers: [{ address: good.address }] },
        // No servername: the certificate must carry the server's address (IP SAN 127.0.0.1).
        { name: 'by-ip', tls: { ca: f('ca.crt') }, servers: [{ address: good.address }] },
        // mixed and rogue: kind tcp, since a tls probe fails the same verification and could mark the
        // untrusted server down before the clients' connects try it.
        {
          name: 'mixed',
          balance: 'round_robin',
          retries: 1,
          health: { kind: 'tcp' },
          tls: { servername: 'backend.test', ca: f('ca.crt') },
          servers: [
            { name: 'untrusted', address: untrusted.address },
            { name: 'trusted', address: good.address },
          ],
        },
        { name: 'rogue', retries: 0, health: { kind: 'tcp' }, tls: { servername: 'backend.test', ca: f('ca.crt') }, servers: [{ name: 'untrusted', address: untrusted.address }] },
        { name: 'noverify', tls: { servername: 'backend.test', verify: false }, servers: [{ address: untrusted.address }] },
      ],
    });

    const c = await clientFor(t, lb.port('good'));
    t.equal(await echoes(c, 'over TLS'), 'over TLS', 'a plain client reaches a TLS echo server');
    t.same(good.handshakes, ['backend.test'], 'one handshake, with servername backend.test as SNI');
    c.end();
    t.equal((await accessLine(lb, c.lport)).termination, 'client_close');

    const ip = await clientFor(t, lb.port('by-ip'));
    t.equal(await echoes(ip, 'by address'), 'by address', 'without servername the certificate is checked against the address');

    const r = await clientFor(t, lb.port('rogue'));
    r.write('never\n');
    await closed(r, 15_000);
    const rline = await accessLine(lb, r.lport);
    t.equal(rline.termination, 'connect_failed', 'a backend certificate from an unknown CA: connect_failed');
    t.equal(untrusted.handshakes.length, 0, 'no handshake completed with the untrusted server');
    const roguePool = lb.app.pools.get('rogue')!;
    t.ok(roguePool.server('untrusted')!.connectFailures >= 1, 'counted as a connect failure of that server');

    // round_robin over [untrusted, trusted] with one retry: every connection ends on the trusted one.
    for (let i = 0; i < 4; i++) {
      const m = await clientFor(t, lb.port('mixed'));
      t.equal(await echoes(m, `mixed ${i}`), `mixed ${i}`, `connection ${i} is served`);
      m.end();
      const line = await accessLine(lb, m.lport);
      t.equal(line.server, 'trusted', `connection ${i}: served by the trusted server`);
    }
    t.ok(lb.app.pools.get('mixed')!.server('untrusted')!.connectFailures >= 1, 'the untrusted server failed at least once and was retried elsewhere');

    const nv = await clientFor(t, lb.port('noverify'));
    t.equal(await echoes(nv, 'unverified'), 'unverified', 'verify: false connects to the untrusted server');
    t.ok(lb.app.model.warnings.some((w) => /pools\[4\]\.tls\.verify: false/.test(w)), 'verify: false is a configuration warning');
  });
}
