/**
 * Certificate store (loading, checks, SNI selection, reload) on certificates
 * made by scripts/gen-test-certs.sh, with real TLS handshakes; and SniRouter.
 */
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { inspect } from 'node:util';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../src/errors.js';
import { loadCertificates, type CertLoadResult, type CertStore } from '../src/tls/cert-store.js';
import { SniRouter, sniPatternProblem } from '../src/tls/sni-routes.js';
import { generateTestCerts, opensslMissing } from './helpers/certs.js';
import { skipUnlessCi } from './helpers/requirements.js';

// ---------------------------------------------------------------------------
// SniRouter (no certificates needed)
// ---------------------------------------------------------------------------

t.test('SniRouter matches exact names and wildcards, and the first match wins', async (t) => {
  const r = new SniRouter([
    { sni: 'db.example.com', target: 'pg' },
    { sni: '*.cache.example.com', target: 'redis' },
    { sni: '*.example.com', target: 'web' },
    { sni: 'special.cache.example.com', target: 'never' }, // shadowed by the wildcard above
    { sni: 'db.example.com', target: 'never-either' }, // duplicate: the first one wins
  ]);
  t.equal(r.size, 5);
  t.equal(r.match('db.example.com'), 'pg');
  t.equal(r.match('a.cache.example.com'), 'redis');
  t.equal(r.match('special.cache.example.com'), 'redis', 'an earlier wildcard beats a later exact route');
  t.equal(r.match('x.y.cache.example.com'), 'redis', 'wildcards span several labels');
  t.equal(r.match('cache.example.com'), 'web', '*.example.com covers cache.example.com');
  t.equal(r.match('www.example.com'), 'web');
  t.equal(r.match('example.com'), undefined, '*.example.com does not match example.com itself');
  t.equal(r.match('example.org'), undefined, 'no match');
  t.equal(r.match('notexample.com'), undefined, 'suffix must start at a label boundary');
});

t.test('SniRouter: order decides between overlapping wildcards', async (t) => {
  const narrowFirst = new SniRouter([
    { sni: '*.b.example.com', target: 1 },
    { sni: '*.example.com', target: 2 },
  ]);
  t.equal(narrowFirst.match('a.b.example.com'), 1);
  t.equal(narrowFirst.match('a.c.example.com'), 2);
  const wideFirst = new SniRouter([
    { sni: '*.example.com', target: 2 },
    { sni: '*.b.example.com', target: 1 },
  ]);
  t.equal(wideFirst.match('a.b.example.com'), 2, 'first match wins, not the most specific');
  const exactLater = new SniRouter([
    { sni: '*.example.com', target: 'wild' },
    { sni: 'a.example.com', target: 'exact' },
  ]);
  t.equal(exactLater.match('a.example.com'), 'wild');
  const exactFirst = new SniRouter([
    { sni: 'a.example.com', target: 'exact' },
    { sni: '*.example.com', target: 'wild' },
  ]);
  t.equal(exactFirst.match('a.example.com'), 'exact');
});

t.test('SniRouter ignores case and a trailing dot, and matches nothing for no SNI or a malformed name', async (t) => {
  const r = new SniRouter([
    { sni: 'DB.Example.COM.', target: 'pg' },
    { sni: '*.Wild.Test', target: 'wild' },
  ]);
  t.equal(r.match('db.example.com'), 'pg');
  t.equal(r.match('DB.EXAMPLE.COM'), 'pg');
  t.equal(r.match('db.example.com.'), 'pg');
  t.equal(r.match('X.WILD.TEST.'), 'wild');
  t.equal(r.match(null), undefined, 'no SNI');
  t.equal(r.match(''), undefined, 'empty SNI');
  t.equal(r.match('a..wild.test'), undefined, 'malformed name');
  t.equal(r.match('.wild.test'), undefined);
  t.equal(new SniRouter<string>([]).match('a.test'), undefined, 'no routes');
});

t.test('SniRouter: invalid patterns are config errors naming the route', async (t) => {
  const bad = ['*', '*.', 'a.*.com', '*foo.com', 'foo*.com', '', 'a b.com', '*.*.com', 'a..com', '-a.com'];
  for (const sni of bad) t.type(sniPatternProblem(sni), 'string', JSON.stringify(sni));
  for (const sni of ['a.com', '*.a.com', 'localhost', 'A.COM.']) t.equal(sniPatternProblem(sni), undefined, sni);
  let err: unknown;
  try {
    new SniRouter([
      { sni: 'ok.test', target: 1 },
      { sni: 'a.*.test', target: 2 },
      { sni: '*', target: 3 },
    ]);
  } catch (e) {
    err = e;
  }
  t.type(err, ConfigError);
  t.same(
    (err as ConfigError).problems.map((p) => p.path),
    ['routes[1].sni', 'routes[2].sni'],
    'every bad route is reported by path',
  );
});

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

const skipCerts = skipUnlessCi(opensslMissing, 'the certificate tests');

t.test('the certificate store loads, checks, selects and reloads certificates', { skip: skipCerts }, async (t) => {
  t.equal(opensslMissing, null, 'openssl is required when CI is set');
  const dir = t.testdir({});
  t.doesNotThrow(() => generateTestCerts(dir), 'gen-test-certs.sh');
  const f = (name: string): string => join(dir, name);
  const pair = (name: string): { cert: string; key: string } => ({ cert: f(`${name}.crt`), key: f(`${name}.key`) });
  const caPem = readFileSync(f('ca.crt'));

  // Every message any load produced; checked for key material at the end.
  const messages: string[] = [];
  const load = async (...args: Parameters<typeof loadCertificates>): Promise<CertLoadResult> => {
    const r = await loadCertificates(...args);
    messages.push(...r.warnings, ...(r.ok ? [] : r.problems.map((p) => p.message)));
    return r;
  };
  const mustLoad = async (...args: Parameters<typeof loadCertificates>): Promise<{ store: CertStore; warnings: string[] }> => {
    const r = await load(...args);
    if (!r.ok) throw new Error(`unexpected problems: ${JSON.stringify(r.problems)}`);
    return r;
  };

  interface Served {
    cn: string;
    serverSaw?: string;
    reused: boolean;
    session?: Buffer;
  }
  /**
   * Handshakes through a tls.Server wired to `store` the recommended way
   * (applyTo + SNICallback, raw sockets handed over with emit('connection')),
   * and returns what the client saw.
   */
  async function servedCN(
    store: CertStore,
    servername: string | undefined,
    client: Partial<tls.ConnectionOptions> = {},
    server: Partial<tls.TlsOptions> = {},
  ): Promise<Served> {
    let serverSaw: string | undefined;
    const tlsServer = tls.createServer({ SNICallback: (name, cb) => cb(null, store.contextFor(name)), ...server });
    store.applyTo(tlsServer);
    tlsServer.on('secureConnection', (s) => {
      s.on('error', () => {});
      const peer = s.getPeerCertificate();
      if (peer && peer.subject) serverSaw = String(peer.subject.CN);
      s.end('hi');
    });
    tlsServer.on('tlsClientError', () => {});
    const srv = net.createServer((raw) => tlsServer.emit('connection', raw));
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const port = (srv.address() as net.AddressInfo).port;
    try {
      return await new Promise<Served>((resolve, reject) => {
        let session: Buffer | undefined;
        const c = tls.connect({
          host: '127.0.0.1',
          port,
          ca: caPem,
          ...(servername !== undefined ? { servername } : {}),
          // The host is an IP: check the chain, not the name (the name is what we test).
          checkServerIdentity: () => undefined,
          ...client,
        });
        c.on('session', (s: Buffer) => (session = s));
        c.on('error', reject);
        let gotData = false;
        c.on('data', () => {
          if (gotData) return;
          gotData = true;
          // A resumed TLS 1.2 session carries no certificate.
          const cn = String(c.getPeerCertificate()?.subject?.CN ?? '(none)');
          const reused = c.isSessionReused();
          c.end();
          // TLS 1.3 tickets arrive after the handshake; wait for the close.
          c.once('close', () =>
            resolve({ cn, reused, ...(serverSaw !== undefined ? { serverSaw } : {}), ...(session ? { session } : {}) }),
          );
        });
        c.on('close', () => {
          if (!gotData) reject(new Error('closed before data'));
        });
      });
    } finally {
      srv.close();
    }
  }

  await t.test('certificates are selected by SNI: exact, wildcard (one label), else the default', async (t) => {
    const { store, warnings } = await mustLoad([pair('default.test'), pair('a.test'), pair('b.test'), pair('wild.test')]);
    t.same(warnings, []);
    t.same(
      store.certificates.map((c) => c.names),
      [['default.test'], ['a.test'], ['b.test'], ['*.wild.test']],
    );
    t.equal(store.certificates[1]!.subjectCN, 'a.test');
    t.match(store.certificates[1]!.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const [dflt, a, b, wild] = store.certificates.map((c) => c.context);
    t.equal(store.contextFor('a.test'), a);
    t.equal(store.contextFor('A.TEST.'), a, 'case and trailing dot');
    t.equal(store.contextFor('b.test'), b);
    t.equal(store.contextFor('x.wild.test'), wild);
    t.equal(store.contextFor('X.Wild.Test'), wild);
    t.equal(store.contextFor('y.x.wild.test'), dflt, 'certificate wildcards cover one label only');
    t.equal(store.contextFor('wild.test'), dflt, 'nor the bare domain');
    t.equal(store.contextFor('.wild.test'), dflt);
    t.equal(store.contextFor('other.test'), dflt, 'no match: the default');
    t.equal(store.contextFor(null), dflt, 'no SNI: the default');
    t.equal(store.default, store.certificates[0]);

    t.equal((await servedCN(store, 'a.test')).cn, 'a.test', 'handshake with SNI a.test');
    t.equal((await servedCN(store, 'b.test')).cn, 'b.test', 'handshake with SNI b.test');
    t.equal((await servedCN(store, 'q.wild.test')).cn, '*.wild.test', 'handshake with a wildcard name');
    t.equal((await servedCN(store, 'nomatch.test')).cn, 'default.test', 'handshake without a match');
    t.equal((await servedCN(store, undefined)).cn, 'default.test', 'handshake without SNI');
  });

  await t.test('every context, SNI-switched ones too, carries the min version and the client CA', async (t) => {
    const { store } = await mustLoad([pair('default.test'), pair('a.test')], {
      clientCa: f('client-ca.crt'),
      context: { minVersion: 'TLSv1.3' },
    });
    const mtls = { requestCert: true, rejectUnauthorized: true };
    const client1 = { cert: readFileSync(f('client1.crt')), key: readFileSync(f('client1.key')) };
    const r = await servedCN(store, 'a.test', client1, mtls);
    t.match(r, { cn: 'a.test', serverSaw: 'client1' }, 'client1 accepted after the SNI switch');
    const r0 = await servedCN(store, undefined, client1, mtls);
    t.match(r0, { cn: 'default.test', serverSaw: 'client1' }, 'and on the default context');
    const { store: store12 } = await mustLoad([pair('default.test'), pair('a.test')], { clientCa: f('client-ca.crt') });
    const tls12 = { ...client1, maxVersion: 'TLSv1.2' as const };
    const full = await servedCN(store12, 'a.test', tls12, mtls);
    const resumed = await servedCN(store12, 'a.test', { ...tls12, session: full.session! }, mtls);
    t.equal(resumed.reused, true, 'TLS 1.2 resumption with a client certificate (needs a session id context)');
    const wrong = { cert: readFileSync(f('client-wrongca.crt')), key: readFileSync(f('client-wrongca.key')) };
    await t.rejects(servedCN(store, 'a.test', wrong, mtls), 'a client certificate from another CA is refused');
    await t.rejects(servedCN(store, 'a.test', {}, mtls), 'no client certificate is refused');
    await t.rejects(servedCN(store, 'a.test', { maxVersion: 'TLSv1.2' }), 'below min_version is refused');
  });

  await t.test('sessions resume across connections and reloads', async (t) => {
    for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
      const { store } = await mustLoad([pair('default.test'), pair('a.test')]);
      const first = await servedCN(store, 'a.test', { maxVersion: version });
      t.equal(first.reused, false, `${version}: full handshake first`);
      t.ok(first.session, `${version}: got a session`);
      const again = await servedCN(store, 'a.test', { maxVersion: version, session: first.session! });
      t.equal(again.reused, true, `${version}: resumed on the SNI-selected context`);
      const reloaded = await store.reload();
      if (!reloaded.ok) return t.fail('reload failed');
      const afterReload = await servedCN(reloaded.store, 'a.test', { maxVersion: version, session: first.session! });
      t.equal(afterReload.reused, true, `${version}: resumed after a reload (ticket keys kept)`);
    }
  });

  await t.test('a key that does not match its certificate is refused', async (t) => {
    const r = await load([pair('default.test'), { cert: f('a.test.crt'), key: f('b.test.key') }]);
    t.equal(r.ok, false);
    if (r.ok) return;
    t.equal(r.problems.length, 1);
    t.match(r.problems[0], { index: 1, field: 'key', path: 'certs[1].key' });
    t.match(r.problems[0]!.message, 'does not match');
    t.match(r.problems[0]!.message, f('b.test.key'), 'names the key file');
    t.match(r.problems[0]!.message, f('a.test.crt'), 'names the certificate file');
  });

  await t.test('missing and unreadable files name their path; all problems at once', async (t) => {
    const r = await load([
      { cert: f('nope.crt'), key: f('a.test.key') },
      { cert: f('b.test.crt'), key: f('nope.key') },
      { cert: dir, key: f('a.test.key') },
    ]);
    t.equal(r.ok, false);
    if (r.ok) return;
    t.same(
      r.problems.map((p) => [p.index, p.field, p.path]),
      [
        [0, 'cert', 'certs[0].cert'],
        [1, 'key', 'certs[1].key'],
        [2, 'cert', 'certs[2].cert'],
      ],
    );
    t.match(r.problems[0]!.message, `cannot read certificate file ${f('nope.crt')}: no such file`);
    t.match(r.problems[1]!.message, `cannot read key file ${f('nope.key')}: no such file`);
    t.match(r.problems[2]!.message, 'is not a regular file');

    const both = await load([{ cert: f('x.crt'), key: f('y.key') }]);
    t.equal(both.ok ? 0 : both.problems.length, 2, 'a missing cert does not hide a missing key');
  });

  await t.test('wrong file kinds, garbage and encrypted keys are refused', async (t) => {
    const garbageKey = `-----BEGIN PRIVATE KEY-----\n${Buffer.alloc(48, 0xab).toString('base64')}\n-----END PRIVATE KEY-----\n`;
    writeFileSync(f('garbage.key'), garbageKey, { mode: 0o600 });
    writeFileSync(f('empty.crt'), '');
    const enc = spawnSync('openssl', ['pkey', '-in', f('a.test.key'), '-aes256', '-passout', 'pass:secret', '-out', f('enc.key')]);
    t.equal(enc.status, 0, 'encrypted key written');
    const cases: Array<[{ cert: string; key: string }, string, RegExp]> = [
      [{ cert: f('a.test.key'), key: f('a.test.key') }, 'cert', /contains no PEM certificate/],
      [{ cert: f('empty.crt'), key: f('a.test.key') }, 'cert', /contains no PEM certificate/],
      [{ cert: f('a.test.crt'), key: f('a.test.crt') }, 'key', /contains no PEM private key/],
      [{ cert: f('a.test.crt'), key: f('garbage.key') }, 'key', /cannot be parsed/],
      [{ cert: f('a.test.crt'), key: f('enc.key') }, 'key', /is encrypted/],
    ];
    for (const [entry, field, message] of cases) {
      const r = await load([entry]);
      t.equal(r.ok, false, `${entry.cert} + ${entry.key}`);
      if (r.ok) continue;
      t.equal(r.problems[0]!.field, field);
      t.match(r.problems[0]!.message, message);
    }
  });

  await t.test('expired and not-yet-valid certificates are warnings, not errors', async (t) => {
    const { store, warnings } = await mustLoad([pair('default.test'), pair('expired.test'), pair('future.test')]);
    t.equal(store.certificates.length, 3);
    t.equal(warnings.length, 2);
    t.match(warnings[0], /^certs\[1\]\.cert: certificate .*expired\.test\.crt expired on 2020-01-02T00:00:00\.000Z$/);
    t.match(warnings[1], /^certs\[2\]\.cert: certificate .*future\.test\.crt is not valid before 2099-01-01T00:00:00\.000Z$/);
    t.equal(store.certificates[1]!.validTo.toISOString(), '2020-01-02T00:00:00.000Z');
    t.equal(store.contextFor('expired.test'), store.certificates[1]!.context, 'still served');
  });

  await t.test('a certificate without DNS names falls back to its CN; no usable names and shadowed names are reported', async (t) => {
    const cn = spawnSync('openssl', [
      'req', '-x509', '-new', '-key', f('a.test.key'), '-subj', '/CN=CN-Only.test', '-days', '1', '-out', f('cn-only.crt'),
    ]);
    t.equal(cn.status, 0, 'CN-only certificate written');
    const { store, warnings } = await mustLoad([
      { cert: f('cn-only.crt'), key: f('a.test.key') },
      pair('ca'), // CN "l4lb test CA": no DNS name at all
      pair('a.test'),
      pair('a.test'),
    ]);
    t.same(store.certificates[0]!.names, ['cn-only.test'], 'subject CN when there is no SAN');
    t.same(store.certificates[1]!.names, []);
    t.equal(store.contextFor('cn-only.test'), store.certificates[0]!.context);
    t.equal(store.contextFor('a.test'), store.certificates[2]!.context, 'the first of two equal names wins');
    t.match(warnings, [/certs\[1\]\.cert: .* has no DNS names/, /certs\[3\]\.cert: name a\.test is already served by certs\[2\]/]);
  });

  await t.test('bad TLS options are reported', async (t) => {
    const none = await load([]);
    t.match(none, { ok: false, problems: [{ path: 'certs', message: /at least one/ }] });
    const ciphers = await load([pair('a.test'), pair('b.test')], { context: { ciphers: 'NO-SUCH-CIPHER' } });
    t.match(ciphers, { ok: false, problems: [{ field: 'options', message: /cannot create a TLS context/ }] });
    t.equal(ciphers.ok ? 0 : ciphers.problems.length, 1, 'reported once, not per certificate');
    const keys = await load([pair('a.test')], { ticketKeys: Buffer.alloc(16) });
    t.match(keys, { ok: false, problems: [{ field: 'options', message: /48 bytes/ }] });
    const ca = await load([pair('a.test')], { clientCa: f('missing-ca.crt') });
    t.match(ca, { ok: false, problems: [{ field: 'client_ca', path: 'client_ca', message: /missing-ca\.crt/ }] });
    const caKey = await load([pair('a.test')], { clientCa: f('client-ca.key') });
    t.match(caKey, { ok: false, problems: [{ field: 'client_ca', message: /no PEM certificate/ }] });
  });

  await t.test('reload re-reads the files and keeps the old store usable', async (t) => {
    copyFileSync(f('a.test.crt'), f('site.crt'));
    copyFileSync(f('a.test.key'), f('site.key'));
    const { store: first } = await mustLoad([pair('default.test'), pair('site')]);
    t.same(first.certificates[1]!.names, ['a.test']);
    const firstCtx = first.contextFor('a.test');

    // Renewed on disk: same paths, other certificate.
    copyFileSync(f('b.test.crt'), f('site.crt'));
    copyFileSync(f('b.test.key'), f('site.key'));
    const second = await first.reload();
    messages.push(...second.warnings);
    t.equal(second.ok, true);
    if (!second.ok) return;
    t.same(second.store.certificates[1]!.names, ['b.test'], 'new store has the new certificate');
    t.not(second.store, first);
    t.same(first.certificates[1]!.names, ['a.test'], 'old store unchanged');
    t.equal(first.contextFor('a.test'), firstCtx);
    t.equal((await servedCN(second.store, 'b.test')).cn, 'b.test', 'new handshakes get the new certificate');
    t.equal((await servedCN(first, 'a.test')).cn, 'a.test', 'the old store still serves');

    // A bad file on reload is reported; nothing changes.
    copyFileSync(f('a.test.key'), f('site.key')); // key of a.test with cert of b.test
    const third = await second.store.reload();
    t.match(third, { ok: false, problems: [{ field: 'key', path: 'certs[1].key', message: /does not match/ }] });
    if (!third.ok) messages.push(...third.problems.map((p) => p.message));
    rmSync(f('site.crt'));
    const fourth = await second.store.reload();
    t.match(fourth, { ok: false, problems: [{ field: 'cert', message: /site\.crt: no such file/ }] });
    if (!fourth.ok) messages.push(...fourth.problems.map((p) => p.message));
    t.equal((await servedCN(second.store, 'b.test')).cn, 'b.test', 'the running store keeps serving');
  });

  await t.test('no message, warning or inspected store contains key material', async (t) => {
    t.ok(messages.length >= 20, `${messages.length} messages collected`);
    const keyFiles = ['a.test.key', 'b.test.key', 'default.test.key', 'ca.key', 'client-ca.key', 'garbage.key', 'enc.key'];
    const fragments: string[] = [];
    for (const k of keyFiles) {
      const body = readFileSync(f(k), 'latin1')
        .split('\n')
        .filter((l) => l && !l.startsWith('-----'))
        .join('');
      for (let i = 0; i + 16 <= body.length; i += 8) fragments.push(body.slice(i, i + 16));
    }
    const { store } = await mustLoad([pair('default.test'), pair('a.test')]);
    const texts = [...messages, inspect(store, { depth: 10, showHidden: true }), JSON.stringify(store.certificates)];
    for (const text of texts) {
      t.notMatch(text, /PRIVATE KEY/, 'no PEM key marker');
      const leaked = fragments.find((frag) => text.includes(frag));
      t.equal(leaked, undefined, 'no key bytes');
    }
  });
});
