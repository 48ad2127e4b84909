/**
 * A client that does not speak TLS, on a TLS listener: one wording, "not
 * TLS: ...", whether the listener terminates or passes through, and the
 * known openings named with their fix (a PostgreSQL SSLRequest: set
 * `protocol: postgres`; a PROXY header: set `accept_proxy`).
 */
import t from 'tap';
import { describeNotTls } from '../src/tls/not-tls.js';
import { SSL_REQUEST } from '../src/protocols/postgres/messages.js';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { accessLines, backendFor, lbFor } from './helpers/lb.js';
import { closed, connect, waitFor } from './helpers/net.js';
import { need } from './helpers/requirements.js';

const OPENINGS: Array<[string, Buffer, RegExp]> = [
  ['a PostgreSQL SSLRequest', SSL_REQUEST, /^not TLS: a PostgreSQL SSLRequest \(set protocol: postgres on this listener\)$/],
  ['a PROXY v1 header', Buffer.from('PROXY TCP4 10.0.0.1 10.0.0.2 1234 443\r\n'), /^not TLS: a PROXY protocol header \(set accept_proxy/],
  ['a PROXY v2 header', Buffer.from('0d0a0d0a000d0a515549540a2111000c', 'hex'), /^not TLS: a PROXY protocol header/],
  ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /^not TLS: a plaintext HTTP request$/],
  ['a Redis command', Buffer.from('*1\r\n$4\r\nPING\r\n'), /^not TLS: a plaintext Redis command$/],
  ['an SSH banner', Buffer.from('SSH-2.0-OpenSSH_9.6\r\n'), /^not TLS: an SSH client$/],
  ['an SSLv2 hello', Buffer.from([0x80, 0x2e, 0x01, 0x00, 0x02]), /^not TLS: an SSLv2-format ClientHello/],
  ['anything else', Buffer.from([0x00, 0x01, 0x02, 0x03, 0x04]), /^not TLS: the first bytes \(0x00 0x01 0x02 0x03\) are not a TLS handshake record$/],
];

t.test('each known opening is named, with its fix', async (t) => {
  for (const [what, bytes, wording] of OPENINGS) t.match(describeNotTls(bytes), wording, what);
});

if (need(t, opensslMissing)) {
  const certs = testCerts();
  t.test('terminate and passthrough listeners log the same words for the same mistake', async (t) => {
    const backend = await backendFor(t);
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        { name: 'term', bind: '127.0.0.1:0', pool: 'p', tls: { mode: 'terminate', certs: [certs.pair('a.test')] } },
        { name: 'pass', bind: '127.0.0.1:0', pool: 'p', tls: { mode: 'passthrough' } },
      ],
      pools: [{ name: 'p', health: { interval: '60s' }, servers: [{ address: backend.address }] }],
    });
    for (const listener of ['term', 'pass']) {
      for (const [what, bytes, wording] of OPENINGS) {
        const before = accessLines(lb).length;
        const c = await connect(lb.port(listener));
        c.on('error', () => {});
        t.teardown(() => c.destroy());
        c.write(bytes);
        await closed(c, 5_000);
        await waitFor(() => accessLines(lb).length > before, 5_000, `the line for ${what}`);
        const line = accessLines(lb).at(-1)!;
        t.equal(line.termination, 'tls_error', `${listener}, ${what}: tls_error`);
        t.match(line.reason, wording, `${listener}, ${what}: named`);
        t.equal(line.server, null, `${listener}, ${what}: no server was connected`);
      }
    }
  });
}
