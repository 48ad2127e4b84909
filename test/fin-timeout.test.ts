/**
 * A half-closed connection whose other side stopped reading does not hold
 * its descriptors for the whole idle timeout (found by the chaos soak): once
 * a side has sent its FIN, ten seconds without a byte moving end it.
 */
import t from 'tap';
import { FIN_TIMEOUT_MS } from '../src/proxy/session.js';
import { accessLine, backendFor, lbFor } from './helpers/lb.js';
import { connect, startBackend, waitFor } from './helpers/net.js';

t.test('a client that sent everything and left, to a server that stopped reading: closed after the fin timeout, not the idle one', async (t) => {
  let backendSocket: import('node:net').Socket | undefined;
  const backend = await backendFor(
    t,
    startBackend((s) => {
      // Sends nothing and keeps its side open: the connection stays half-closed.
      s.pause();
      s.on('error', () => {});
      backendSocket = s;
    }),
  );
  const lb = await lbFor(t, {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', timeouts: { idle: '1h' } }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ address: backend.address }] }],
  });
  const c = await connect(lb.port());
  c.on('error', () => {});
  const port = c.localPort!;
  // Small enough to reach the server's socket buffer, so l4lb sees the client's FIN and passes it on.
  c.write(Buffer.alloc(64 << 10));
  c.end();
  c.destroy();
  await waitFor(() => backendSocket !== undefined, 5_000, 'the backend connection');
  const started = Date.now();
  await waitFor(() => lb.app.connections === 0, FIN_TIMEOUT_MS + 10_000, 'l4lb to give up on the half-closed connection');
  const waited = Date.now() - started;
  t.ok(waited >= FIN_TIMEOUT_MS - 2_000, `not before the fin timeout (${waited} ms)`);
  const line = await accessLine(lb, port);
  t.equal(line.termination, 'client_close', 'logged as the client closing (it did, first)');
  t.equal(lb.app.connections, 0, 'nothing left open');
});
