/**
 * TLS termination for one listener. Accepted sockets are handed to a
 * non-listening `tls.Server` (so requestCert/rejectUnauthorized are enforced
 * for mutual TLS); the certificate is chosen per handshake from the current
 * CertStore, which a reload swaps without touching open connections.
 */
import type net from 'node:net';
import tls from 'node:tls';
import type { ListenerTlsModel } from '../config/model.js';
import type { CertStore } from './cert-store.js';

/** Who waits for a handshake: the connection's session. */
export interface HandshakeOwner {
  onTlsSecure(socket: tls.TLSSocket): void;
  onTlsError(err: Error): void;
}

/** What the access log and the PROXY v2 SSL TLV need to know of a finished handshake. */
export interface TlsDetails {
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly version: string | null;
  readonly cipher: string | null;
  /** Subject CN of the client certificate, when one was presented. */
  readonly clientCn: string | null;
  readonly clientCertPresented: boolean;
  readonly clientCertVerified: boolean;
}

export class TlsTerminator {
  readonly #server: tls.Server;
  readonly #owners = new WeakMap<net.Socket, HandshakeOwner>();
  #store: CertStore;

  constructor(model: ListenerTlsModel, store: CertStore, handshakeMs: number) {
    this.#store = store;
    const mutual = model.clientCa !== null;
    this.#server = tls.createServer({
      SNICallback: (name, cb) => cb(null, this.#store.contextFor(name)),
      ALPNProtocols: model.alpn.length > 0 ? [...model.alpn] : undefined,
      requestCert: mutual,
      rejectUnauthorized: mutual,
      // The session's own deadline covers every phase; this is a backstop.
      handshakeTimeout: handshakeMs + 1_000,
      minVersion: model.minVersion,
      ...(model.ciphers !== null ? { ciphers: model.ciphers } : {}),
    });
    store.applyTo(this.#server);
    this.#server.on('secureConnection', (socket: tls.TLSSocket) => {
      const raw = parentOf(socket);
      const owner = raw && this.#owners.get(raw);
      if (owner) owner.onTlsSecure(socket);
      else socket.destroy();
    });
    this.#server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      const raw = parentOf(socket);
      const owner = raw && this.#owners.get(raw);
      // A client certificate that fails verification (unknown CA, expired)
      // is not an OpenSSL error: Node checks it after the handshake and, with
      // rejectUnauthorized, destroys the socket silently; all that follows is
      // this generic "socket hang up". The real reason is authorizationError.
      const refused = socket.authorizationError;
      if (owner) owner.onTlsError(refused ? certificateRefused(refused) : err);
      socket.destroy();
    });
  }

  /** Start the handshake on an accepted socket; the owner hears how it ends. */
  accept(raw: net.Socket, owner: HandshakeOwner): void {
    this.#owners.set(raw, owner);
    this.#server.emit('connection', raw);
  }

  /** Serve new handshakes from `store` (after a reload); open connections keep theirs. */
  setStore(store: CertStore): void {
    this.#store = store;
    store.applyTo(this.#server);
  }

  get store(): CertStore {
    return this.#store;
  }
}

/**
 * The accepted socket a TLSSocket wraps. Node keeps it as `_parent`
 * (undocumented but stable since v0.11; covered by the TLS tests).
 */
function parentOf(socket: tls.TLSSocket): net.Socket | undefined {
  return (socket as unknown as { _parent?: net.Socket })._parent;
}

/** The error reported for a client certificate that failed verification: OpenSSL's code, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE. */
function certificateRefused(code: unknown): Error {
  // Typed as Error in @types/node, but Node sets the verify error's code (a string).
  const text = typeof code === 'string' ? code : ((code as NodeJS.ErrnoException).code ?? String(code));
  return new Error(`client certificate refused: ${text}`);
}

/** Everything worth logging and relaying about a finished server-side handshake. */
export function tlsDetails(socket: tls.TLSSocket): TlsDetails {
  const servername = (socket as unknown as { servername?: string | false }).servername;
  const cert = socket.getPeerCertificate();
  const presented = cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
  const cn = presented ? cert.subject?.CN : undefined;
  return {
    sni: typeof servername === 'string' && servername !== '' ? servername.toLowerCase() : null,
    alpn: typeof socket.alpnProtocol === 'string' ? socket.alpnProtocol : null,
    version: socket.getProtocol(),
    cipher: socket.getCipher()?.standardName ?? null,
    clientCn: typeof cn === 'string' ? cn : Array.isArray(cn) ? (cn[0] ?? null) : null,
    clientCertPresented: presented,
    clientCertVerified: presented && socket.authorized,
  };
}
