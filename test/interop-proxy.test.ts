/**
 * PROXY protocol interop with real programs nobody here wrote:
 * (a) nginx `stream` with `listen ... proxy_protocol` as the receiver of
 *     l4lb's v1 and v2 headers: nginx logs the client 127.0.0.77;
 * (b) HAProxy `mode tcp` with `accept-proxy` as the receiver: it logs the
 *     client 127.0.0.77 (and l4lb's health probe headers pass through it);
 * (c) HAProxy as the sender (`send-proxy-v2`, `send-proxy`, and v2 with
 *     CRC32C and UNIQUE_ID TLVs) in front of an l4lb listener with
 *     accept_proxy: the backend behind l4lb sees HAProxy's client.
 *
 * The test client always connects from 127.0.0.77. When nginx or HAProxy is
 * missing these tests fail if CI is set and are skipped (with the reason
 * printed) otherwise; see test/helpers/peers.ts ($L4LB_TEST_NGINX and
 * $L4LB_TEST_HAPROXY choose other binaries). Every wait is bounded and
 * every child process is killed in teardown.
 */
import t, { type Test } from 'tap';
import { closed, readLine, sleep, type Running } from './helpers/net.js';
import { backendFor, clientFor, lbFor } from './helpers/lb.js';
import { HAPROXY_PREAMBLE, readIfExists, requirePeer, startHaproxy, startNginx, waitForText } from './helpers/peers.js';
import { proxyBackend } from './helpers/proxy-backend.js';

const CLIENT_IP = '127.0.0.77';
const VERSIONS = ['v1', 'v2'] as const;

function config(server: string, pool: Record<string, unknown> = {}, listener: Record<string, unknown> = {}) {
  return {
    log: { level: 'debug', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...listener }],
    pools: [{ name: 'p', balance: 'round_robin', timeouts: { connect: '5s' }, servers: [{ name: 'peer', address: server }], ...pool }],
  };
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Waits until l4lb's probes of the only server have succeeded for a while
 * (about 5 probes at 200ms), then checks it was never marked down.
 */
async function probesPass(t: Test, lb: Running, what: string): Promise<void> {
  const server = lb.app.pools.get('p')!.servers[0]!;
  const since = Date.now();
  const deadline = since + 15_000;
  while (!(server.health.last?.ok === true && server.health.last.at > since + 1_000)) {
    if (Date.now() > deadline) break;
    await sleep(50);
  }
  t.equal(server.health.last?.ok, true, `${what}: l4lb's probes pass (${JSON.stringify(server.health.last)})`);
  t.same(lb.lines.filter((l) => l.msg === 'server down'), [], `${what}: never marked down`);
}

// ---------------------------------------------------------------------------
// (a) nginx as the receiver

for (const version of VERSIONS) {
  t.test(`nginx stream "listen ... proxy_protocol" behind l4lb (pool proxy_protocol ${version}) logs the client 127.0.0.77`, async (t) => {
    const bin = requirePeer(t, 'nginx');
    if (bin === undefined) return;
    t.comment(`${bin.version}${bin.streamModuleDirective ? ` with ${bin.streamModuleDirective}` : ''}`);
    const nginx = await startNginx(
      t,
      bin,
      (port, dir) => `log_format pp '$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port';
server {
    listen 127.0.0.1:${port} proxy_protocol;
    proxy_protocol_timeout 10s;
    access_log ${dir}/access.log pp;
    return "ok\\n";
}`,
    );
    // The probe expects nginx's "ok", which nginx sends only after accepting the header.
    const lb = await lbFor(t, config(`127.0.0.1:${nginx.port}`, { proxy_protocol: version, health: { interval: '200ms', timeout: '3s', fall: 1, expect: 'ok' } }));

    const socket = await clientFor(t, lb.port(), CLIENT_IP);
    const { lport } = socket;
    t.equal(await readLine(socket, 10_000), 'ok', 'nginx answered through l4lb');
    await closed(socket, 10_000);
    const log = (): string => readIfExists(nginx.file('access.log'));
    const re = new RegExp(`^${esc(CLIENT_IP)} ${lport} 127\\.0\\.0\\.1 ${lb.port()}$`, 'm');
    const m = await waitForText(log, re, 10_000, "nginx's access-log line for the client");
    t.pass(`nginx logged "${m[0]}": $proxy_protocol_addr 127.0.0.77, the client's port, and l4lb's listener as the server side`);

    await probesPass(t, lb, `nginx with ${version}`);
    if (version === 'v1') {
      t.match(log(), new RegExp(`^127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.1 ${nginx.port}$`, 'm'), "nginx logged a v1 probe line with the probe's own addresses");
    }
    t.notMatch(nginx.stderr(), /broken header: "(?!")/, `nginx reported no broken header with content (stderr: ${nginx.stderr().slice(-500)})`);
  });
}

// ---------------------------------------------------------------------------
// (b) HAProxy as the receiver

for (const version of VERSIONS) {
  t.test(`HAProxy mode tcp "accept-proxy" behind l4lb (pool proxy_protocol ${version}) logs the client 127.0.0.77`, async (t) => {
    const bin = requirePeer(t, 'haproxy');
    if (bin === undefined) return;
    t.comment(bin.version);
    const echo = await backendFor(t);
    const haproxy = await startHaproxy(
      t,
      bin,
      (port) => `${HAPROXY_PREAMBLE}
frontend fe
    bind 127.0.0.1:${port} accept-proxy
    log-format "pp src=%[src] src_port=%[src_port] dst=%[dst] dst_port=%[dst_port] authority=%[fc_pp_authority]"
    default_backend be

backend be
    server echo ${echo.address}
`,
    );
    // The probe's PING comes back from the echo server only if HAProxy accepted the probe's header.
    const lb = await lbFor(
      t,
      config(`127.0.0.1:${haproxy.port}`, { proxy_protocol: version, health: { interval: '200ms', timeout: '3s', fall: 1, send: 'PING\r\n', expect: 'PING' } }),
    );

    const socket = await clientFor(t, lb.port(), CLIENT_IP);
    const { lport } = socket;
    socket.write('hello haproxy\n');
    t.equal(await readLine(socket, 10_000), 'hello haproxy', 'echoed through l4lb and HAProxy');
    socket.end();
    await closed(socket, 10_000);
    const re = new RegExp(`^pp src=${esc(CLIENT_IP)} src_port=${lport} dst=127\\.0\\.0\\.1 dst_port=${lb.port()} authority=-$`, 'm');
    const m = await waitForText(() => haproxy.stdout(), re, 10_000, "HAProxy's log line for the client");
    t.pass(`HAProxy logged "${m[0]}"`);
    await probesPass(t, lb, `HAProxy with ${version}`);
  });
}

// ---------------------------------------------------------------------------
// (c) HAProxy as the sender

const SENDERS = [
  { name: 'send-proxy-v2', server: 'send-proxy-v2', extra: '' },
  { name: 'send-proxy (v1)', server: 'send-proxy', extra: '' },
  {
    name: 'send-proxy-v2 with CRC32C and UNIQUE_ID TLVs',
    server: 'send-proxy-v2 proxy-v2-options crc32c,unique-id',
    extra: '    unique-id-format "%ci:%cp"\n',
  },
];

for (const sender of SENDERS) {
  t.test(`HAProxy ${sender.name} in front of l4lb accept_proxy (pool v1): the backend sees HAProxy's client 127.0.0.77`, async (t) => {
    const bin = requirePeer(t, 'haproxy');
    if (bin === undefined) return;
    const backend = await backendFor(t, proxyBackend());
    const lb = await lbFor(t, config(backend.address, { proxy_protocol: 'v1' }, { accept_proxy: true, trusted_proxies: ['127.0.0.1/32'] }));
    const haproxy = await startHaproxy(
      t,
      bin,
      (port) => `${HAPROXY_PREAMBLE}
listen front
    bind 127.0.0.1:${port}
${sender.extra}    log-format "sent src=%[src] src_port=%[src_port]"
    server l4lb 127.0.0.1:${lb.port()} ${sender.server}
`,
    );

    const socket = await clientFor(t, haproxy.port, CLIENT_IP);
  const { lport } = socket;
    socket.write('through haproxy and l4lb\n');
    t.equal(await readLine(socket, 10_000), 'through haproxy and l4lb', 'echoed by the backend behind both');
    const conn = await backend.waitForConn(
      (c) => c.header?.source?.address === CLIENT_IP && c.header.source.port === lport,
      10_000,
      "the backend connection carrying HAProxy's client",
    );
    t.equal(conn.header!.version, 1, 'l4lb sent the backend a v1 line');
    t.same(conn.header!.destination, { address: '127.0.0.1', port: haproxy.port }, "destination: HAProxy's frontend, as HAProxy reported it");
    t.equal(conn.data.toString(), 'through haproxy and l4lb\n', 'the payload follows unchanged');
    socket.end();
    await closed(socket, 10_000);

    const lines = (): Array<Record<string, unknown>> => lb.lines.filter((l) => l.msg === 'connection');
    const deadline = Date.now() + 10_000;
    while (!lines().some((l) => l.client === `${CLIENT_IP}:${lport}`) && Date.now() < deadline) await sleep(20);
    const line = lines().find((l) => l.client === `${CLIENT_IP}:${lport}`);
    t.ok(line, `l4lb's access log names HAProxy's client 127.0.0.77:${lport}`);
    t.equal(line?.termination, 'client_close', 'and the connection ended normally');
    // The launcher's readiness check also went through HAProxy, which resets its
    // server side when the client is already gone; l4lb then sees a peer with
    // no address (logged as client ":0"). Every other connection carried a
    // header from HAProxy, and none of those may have been refused.
    t.same(
      lines().filter((l) => l.termination === 'proxy_header_error' && l.client !== ':0'),
      [],
      'l4lb accepted every header HAProxy sent',
    );
  });
}

t.test('HAProxy send-proxy-v2 proxy-v2-options crc32c,unique-id really sends those TLVs (checked directly, without l4lb)', async (t) => {
  const bin = requirePeer(t, 'haproxy');
  if (bin === undefined) return;
  const backend = await backendFor(t, proxyBackend());
  const haproxy = await startHaproxy(
    t,
    bin,
    (port) => `${HAPROXY_PREAMBLE}
listen front
    bind 127.0.0.1:${port}
    unique-id-format "%ci:%cp"
    server direct ${backend.address} send-proxy-v2 proxy-v2-options crc32c,unique-id
`,
  );
  const socket = await clientFor(t, haproxy.port, CLIENT_IP);
  const { lport } = socket;
  socket.write('x\n');
  t.equal(await readLine(socket, 10_000), 'x', 'echoed through HAProxy');
  const conn = await backend.waitForConn((c) => c.header?.source?.address === CLIENT_IP, 10_000, "HAProxy's header");
  const tlvs = conn.header!.tlvs;
  t.type(tlvs.crc32c, 'number', `a CRC32C TLV that l4lb's parser verified (0x${tlvs.crc32c?.toString(16)})`);
  t.equal(tlvs.uniqueId?.toString(), `${CLIENT_IP}:${lport}`, 'a UNIQUE_ID TLV with the unique-id-format value');
});
