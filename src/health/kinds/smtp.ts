/**
 * kind smtp, for servers that speak first (SMTP, and with `expect` POP3,
 * FTP and the like): the probe sends nothing until the greeting has come,
 * so a server that accepts the connection but is frozen (SIGSTOP, a hung
 * accept loop; the kernel completes the TCP handshake alone) fails within
 * the timeout. Up when the greeting's first line starts with `expect`
 * (default `220`). A multi-line greeting (`220-...` lines, then `220 ...`)
 * is read to its last line before the probe says `QUIT`: a client that
 * talks before the greeting is done is what spam filters look for. The
 * server answers `221` and closes; the probe closes after it.
 */
import { DEFAULTS } from '../../defaults.js';
import { describeReply, fail, lineReader, type Conversation, type Verdict } from './conversation.js';

/** Greeting lines are short; RFC 5321 allows 512 bytes for a reply line. */
const MAX_LINE_BYTES = 4096;
/** More continuation lines than this is not a greeting. */
const MAX_LINES = 100;
const QUIT = Buffer.from('QUIT\r\n', 'latin1');

export function smtpConversation(expect: Buffer | null): Conversation {
  // Compared as latin1: one character per byte, so `hex:` expectations work too.
  const wanted = (expect ?? Buffer.from(DEFAULTS.healthSmtpExpect, 'latin1')).toString('latin1');
  let first: string | undefined;
  let lines = 0;
  const read = lineReader(MAX_LINE_BYTES, 'greeting', (line): Verdict | undefined => {
    first ??= line;
    if (++lines > MAX_LINES) return fail(`greeting longer than ${MAX_LINES} lines`);
    // "220-" continues a multi-line greeting; the last line has a space (or nothing) after the code.
    if (/^\d{3}-/.test(line) && line.slice(0, 3) === first.slice(0, 3)) return undefined;
    const ok = first.startsWith(wanted);
    return { ok, reason: ok ? '' : describeReply('greeting mismatch', Buffer.from(first, 'latin1')), farewell: QUIT, serverCloses: true };
  });
  return {
    start: () => undefined,
    data: read,
    closed: () => fail(first === undefined ? 'connection closed before the greeting' : describeReply('connection closed during the greeting', Buffer.from(first, 'latin1'))),
  };
}
