/**
 * kind redis: `AUTH password` when one is configured, `PING`, then `QUIT`,
 * as RESP arrays (so any password bytes travel as they are). Up on `+PONG`;
 * an error reply is down with its message: `-NOAUTH` (a password is needed),
 * `-WRONGPASS`, `-LOADING` (still reading its dataset), `-MASTERDOWN` (a
 * replica that lost its master, with replica-serve-stale-data off). The
 * server answers QUIT with `+OK` and closes; the probe closes after it, so
 * Redis has nothing to log, over TLS too.
 *
 * The password is never in a reason: a reply that quotes it gets it masked.
 */
import { describeReply, fail, lineReader, shown, type Conversation, type Verdict } from './conversation.js';

/** Simple-string and error replies are one short line. */
const MAX_LINE_BYTES = 4096;
const PING = command('PING');
const QUIT = command('QUIT');

export interface RedisProbeLogin {
  /** Sent with AUTH; null = no AUTH. */
  readonly password: Buffer | null;
}

/** A RESP array of bulk strings: `*N`, then `$LEN` and the bytes of each word. */
function command(...words: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${words.length}\r\n`, 'latin1')];
  for (const w of words) {
    const bytes = typeof w === 'string' ? Buffer.from(w, 'latin1') : w;
    parts.push(Buffer.from(`$${bytes.length}\r\n`, 'latin1'), bytes, Buffer.from('\r\n', 'latin1'));
  }
  return Buffer.concat(parts);
}

export function redisConversation(login: RedisProbeLogin): Conversation {
  const password = login.password;
  /** The replies still due, in order. */
  const due: Array<'AUTH' | 'PING'> = password === null ? ['PING'] : ['AUTH', 'PING'];
  const masked = (text: string): string => {
    if (password === null || password.length === 0) return text;
    return text.split(password.toString('latin1')).join('***');
  };
  const read = lineReader(MAX_LINE_BYTES, 'reply', (line): Verdict | undefined => {
    const what = due.shift()!;
    const goodbye = { farewell: QUIT, serverCloses: true } as const;
    if (line.startsWith('-')) return { ok: false, reason: `redis ${what}: ${shown(masked(line.slice(1)))}`, ...goodbye };
    if (what === 'AUTH') return line === '+OK' ? undefined : { ...fail(describeReply('unexpected redis reply to AUTH', Buffer.from(masked(line), 'latin1'))), ...goodbye };
    if (line === '+PONG') return { ok: true, reason: '', ...goodbye };
    return fail(describeReply('not a redis reply to PING', Buffer.from(masked(line), 'latin1')));
  });
  return {
    start(socket): Verdict | undefined {
      // Pipelined: Redis answers in order, and a refused AUTH still gets its PING answered (NOAUTH).
      socket.write(password === null ? PING : Buffer.concat([command('AUTH', password), PING]));
      return undefined;
    },
    data: read,
    closed: () => fail(`connection closed before the redis reply to ${due[0] ?? 'PING'}`),
  };
}
