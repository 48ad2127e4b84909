import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { closed, connect, startBackend, sleep } from './helpers/net.js';
import { backendFor, lbFor } from './helpers/lb.js';

function config(servers: string[], extra: Record<string, unknown> = {}) {
  return {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...extra }],
    pools: [{ name: 'p', balance: 'round_robin', servers: servers.map((address) => ({ address })) }],
  };
}

t.test('20 MB of random bytes go through l4lb to an echo backend and come back unchanged', async (t) => {
  const backend = await backendFor(t);
  const lb = await lbFor(t, config([backend.address]));

  const payload = randomBytes(20 * 1024 * 1024);
  const sent = createHash('sha256').update(payload).digest('hex');
  const client = await connect(lb.port());
  const received = createHash('sha256');
  let count = 0;
  client.on('data', (d: Buffer) => {
    received.update(d);
    count += d.length;
    if (count >= payload.length) client.end();
  });
  client.write(payload);
  await closed(client, 60_000);
  t.equal(count, payload.length, 'every byte came back');
  t.equal(received.digest('hex'), sent, 'SHA-256 of what came back equals what was sent');
});

t.test('half-close: the client FIN reaches the backend, whose reply after EOF still arrives', async (t) => {
  // This backend answers only once the client has finished sending.
  const backend = await backendFor(
    t,
    startBackend(
      (s) => {
        let size = 0;
        s.on('data', (d: Buffer) => (size += d.length));
        s.on('end', () => {
          s.end(`received ${size} bytes; ${'x'.repeat(100_000)}`);
        });
      },
      { allowHalfOpen: true },
    ),
  );
  const lb = await lbFor(t, config([backend.address]));

  const client = await connect(lb.port(), undefined, { allowHalfOpen: true });
  let reply = '';
  client.on('data', (d: Buffer) => (reply += d.toString()));
  client.end('hello world');
  await closed(client);
  t.ok(reply.startsWith('received 11 bytes; '), 'backend saw EOF and the whole request');
  t.equal(reply.length, 'received 11 bytes; '.length + 100_000, 'the whole reply arrived after the half-close');
  await sleep(100);
  const line = lb.lines.find((l) => l.msg === 'connection');
  t.equal(line?.termination, 'client_close', 'the client closed first');
  t.equal(line?.bytes_in, 11);
});

t.test('idle timeout closes both sides', async (t) => {
  let backendSocket: net.Socket | undefined;
  const backend = await backendFor(t, startBackend((s) => s.once('data', () => (backendSocket = s))));
  const raw = config([backend.address], { timeouts: { idle: '300ms' } });
  const lb = await lbFor(t, raw);

  const client = await connect(lb.port());
  client.on('error', () => {});
  client.write('x');
  const took = await closed(client, 3_000);
  t.ok(took >= 250, `client closed after ${took}ms, not before the idle timeout`);
  await closed(backendSocket!, 1_000);
  t.pass('backend side closed too');
  await sleep(50);
  t.equal(lb.lines.find((l) => l.msg === 'connection')?.termination, 'idle_timeout');
});

t.test('errors on either side close both, through one teardown', async (t) => {
  // Health probes connect too: the client's backend socket is the one that receives data.
  let backendSocket: net.Socket | undefined;
  const backend = await backendFor(t, startBackend((s) => s.once('data', () => (backendSocket = s))));
  const lb = await lbFor(t, config([backend.address]));

  const client = await connect(lb.port());
  client.on('error', () => {});
  client.write('x');
  await new Promise((r) => setTimeout(r, 100));
  backendSocket!.resetAndDestroy();
  await closed(client, 2_000);
  await sleep(50);
  const lines = lb.lines.filter((l) => l.msg === 'connection');
  t.equal(lines.length, 1, 'exactly one access log line');
  t.equal(lines[0]?.termination, 'server_close');
  t.equal(lb.app.connections, 0, 'no session left open');
  t.equal(lb.app.pools.get('p')!.servers[0]!.active, 0, 'active count back to zero');
});
