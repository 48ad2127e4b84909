/**
 * A worker thread's side: it builds its data plane from the plan the main
 * thread sends, accepts on every listener's port (SO_REUSEPORT) and serves
 * its own connections; what must be global is in shared memory. It reads no
 * file (the main thread sends the secret files' contents) and keeps no
 * state of its own that outlives it: when it dies, the main thread takes
 * its share of the counts back and starts another.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { ConfigError, L4lbError } from '../errors.js';
import { loggerOptions } from '../log.js';
import { processFds } from '../net/fd-budget.js';
import { C_FDS_HELD, SharedMemory } from '../shared/memory.js';
import { useGivenSecrets } from '../config/secret-file.js';
import { DataPlane, type PreparedReload } from './data-plane.js';
import type { Plan } from './plan.js';
import type { FromThread, ThreadData, ThreadError, ToThread } from './thread-messages.js';

/**
 * Lines are sent to the main thread in batches: all the lines of one turn of
 * the event loop (a burst of closes is one message), at most about this many
 * bytes each.
 */
const LOG_BATCH_BYTES = 4_096;
/** Most bytes of lines held while the main thread does not take them; beyond, lines are dropped. */
const LOG_MAX_PENDING_BYTES = 1024 * 1024;

const port = parentPort!;
const data = workerData as ThreadData;
const memory = SharedMemory.attach(data.handles, data.thread);
processFds.share(memory.control, C_FDS_HELD, false);

function send(message: FromThread): void {
  port.postMessage(message);
}

/** Log lines go to the main thread, which alone writes stdout (so lines of every thread stay whole). */
let pending = '';
let flushing: NodeJS.Immediate | undefined;
function flushLog(): void {
  clearImmediate(flushing);
  flushing = undefined;
  if (pending === '') return;
  send({ kind: 'log', text: pending });
  pending = '';
}
const logger = pino(loggerOptions(data.level), {
  write(line: string): void {
    if (pending.length + line.length > LOG_MAX_PENDING_BYTES) return;
    pending += line;
    if (pending.length >= LOG_BATCH_BYTES) flushLog();
    else flushing ??= setImmediate(flushLog);
  },
});

let plane: DataPlane | undefined;
let prepared: { reload: PreparedReload; plan: Plan } | undefined;

function errorOf(err: unknown): ThreadError {
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    name: e.name,
    code: err instanceof L4lbError ? err.code : undefined,
    message: e.message,
    ...(err instanceof ConfigError ? { problems: err.problems.map((p) => ({ path: p.path, message: p.message })) } : {}),
  };
}

/** Failed client connects go to the main thread's health checker (this thread counted them already). */
function watchConnectFailures(p: DataPlane): void {
  for (const pool of p.pools.values()) {
    pool.onConnectFailure((server, reason) => send({ kind: 'connect-failure', pool: pool.name, server: server.name, reason }));
  }
}

async function handle(message: ToThread): Promise<void> {
  switch (message.kind) {
    case 'start': {
      useGivenSecrets(message.plan.secrets);
      plane = new DataPlane(message.plan, { memory, logger, fds: processFds });
      await plane.start();
      watchConnectFailures(plane);
      send({ kind: 'started' });
      return;
    }
    case 'prepare': {
      useGivenSecrets(message.plan.secrets);
      prepared = { reload: await plane!.prepare(message.plan), plan: message.plan };
      send({ kind: 'prepared' });
      return;
    }
    case 'commit': {
      const p = prepared;
      prepared = undefined;
      if (p !== undefined) {
        p.reload.commit();
        logger.level = p.plan.model.log.level;
        watchConnectFailures(plane!);
      }
      send({ kind: 'committed' });
      return;
    }
    case 'abort': {
      const p = prepared;
      prepared = undefined;
      await p?.reload.abort();
      return;
    }
    case 'drain':
      await plane?.drain();
      send({ kind: 'drained' });
      return;
    case 'shutdown':
      plane?.shutdown();
      return;
    case 'destroy':
      await plane?.destroy();
      flushLog();
      send({ kind: 'destroyed' });
      port.close();
      return;
  }
}

port.on('message', (message: ToThread) => {
  handle(message).catch((err: unknown) => {
    flushLog();
    send({ kind: 'failed', error: errorOf(err) });
  });
});
