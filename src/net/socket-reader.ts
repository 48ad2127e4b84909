/**
 * Reading the first bytes of a paused socket (a PROXY header, a
 * ClientHello) before anything else may: the reader's listeners are added
 * together and removed together, and the socket is paused again when it
 * stops, so whatever reads next starts from a quiet socket.
 */
import type net from 'node:net';

export interface SocketReaderHandlers {
  /** A chunk arrived. */
  data(chunk: Buffer): void;
  /** The peer sent FIN. */
  end(): void;
  /** The socket closed (after an error, a reset, or both ends). */
  close(): void;
}

/**
 * Start reading `socket` into `handlers`; returns stop(), which removes the
 * listeners and pauses the socket (idempotent). Handlers usually call stop()
 * first thing when they decide.
 */
export function readSocket(socket: net.Socket, handlers: SocketReaderHandlers): () => void {
  const onData = (chunk: Buffer): void => handlers.data(chunk);
  const onEnd = (): void => handlers.end();
  const onClose = (): void => handlers.close();
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('close', onClose);
  socket.resume();
  return () => {
    socket.pause();
    socket.removeListener('data', onData);
    socket.removeListener('end', onEnd);
    socket.removeListener('close', onClose);
  };
}
