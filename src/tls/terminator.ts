/**
 * TLS termination for one listener. Accepted sockets are handed to a
 * non-listening `tls.Server` (so requestCert/rejectUnauthorized are enforced
 * for mutual TLS); the certificate is chosen per handshake from the current
 * CertStore, which a reload swaps without touching open connections.
 *
 * Session tickets: OpenSSL encrypts and decrypts tickets with the key of the
 * server's own context only (an SNI-switched context's key is never used),
 * and Node gives a context exactly one key. To keep the previous key for
 * decryption after a rotation (see ticket-keys.ts), a second server holds
 * it, and while there is a previous key the front end reads the ClientHello
 * first (`needsHello()`): a resumption whose ticket (TLS 1.2) or PSK
 * identity (TLS 1.3) starts with the previous key's name goes to that
 * server, everything else to the current one. Outside that window (one
 * session lifetime per rotation) there is no peek at all. A TLS 1.3 client
 * resumed by the previous server gets its new tickets under the previous key
 * too; they stop resuming when that key expires (one full handshake later,
 * they are current again).
 *
 * `strict_sni`: the ClientHello is always read first, and one without a
 * server name, or with a name no certificate covers, is refused with an
 * `unrecognized_name` alert before any handshake work (Node does not call
 * the SNICallback without SNI, so the server could not refuse it itself).
 *
 * The owner of a handshake is found again through the accepted socket: Node
 * hands back the TLS socket it made, whose only link to that socket is the
 * undocumented `_parent` (stable since v0.11, covered by the TLS tests).
 * Building the TLS socket ourselves instead would need more of Node's
 * internals, not fewer (its server-side authorization check and completion
 * event are private), so this one read is kept, in one function.
 */
import type net from 'node:net';
import tls from 'node:tls';
import type { ListenerTlsModel } from '../config/model.js';
import { DEFAULTS } from '../defaults.js';
import type { CertStore } from './cert-store.js';
import type { ClientHelloInfo } from './client-hello.js';
import { TICKET_KEY_NAME_BYTES, ticketNamesKey, type TicketKeys } from './ticket-keys.js';

/** Who waits for a handshake: the TLS stage of the connection's front end. */
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

/** A fatal `unrecognized_name` alert (RFC 6066 §3), as a server's first record. */
const UNRECOGNIZED_NAME_ALERT = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);

export class TlsTerminator {
  readonly #model: ListenerTlsModel;
  readonly #handshakeMs: number;
  readonly #owners = new WeakMap<net.Socket, HandshakeOwner>();
  #store: CertStore;
  /** Serves every handshake but those resuming under the previous ticket key. */
  readonly #server: tls.Server;
  /** Holds the previous ticket key while it may still decrypt; null otherwise. */
  #previous: tls.Server | null = null;
  /** The previous key's name (the first bytes of its tickets), or null. */
  #previousName: Buffer | null = null;
  readonly #keys: TicketKeys | null;
  #appliedGeneration = -1;

  /**
   * @param keys the listener's ticket keys (kept across reloads); null when
   *   `session_tickets: false` (the store's options then turn tickets off).
   */
  constructor(model: ListenerTlsModel, store: CertStore, handshakeMs: number, keys: TicketKeys | null = null) {
    this.#model = model;
    this.#handshakeMs = handshakeMs;
    this.#store = store;
    this.#keys = model.sessionTickets ? keys : null;
    this.#server = this.#createServer();
    this.#applyKeys();
  }

  #createServer(): tls.Server {
    const model = this.#model;
    const mutual = model.clientCa !== null;
    const server = tls.createServer({
      SNICallback: (name, cb) => {
        // Refused before the handshake already (see accept); this guards the rule itself.
        if (model.strictSni && this.#store.match(name) === null) return cb(new Error(`strict_sni: no certificate for server name "${name}"`));
        cb(null, this.#store.contextFor(name));
      },
      ALPNProtocols: model.alpn.length > 0 ? [...model.alpn] : undefined,
      requestCert: mutual,
      rejectUnauthorized: mutual,
      // The session's own deadline covers every phase; this is a backstop.
      handshakeTimeout: this.#handshakeMs + 1_000,
      // Named, and tied to how long a previous ticket key is kept.
      sessionTimeout: DEFAULTS.tlsSessionLifetimeMs / 1_000,
      minVersion: model.minVersion,
      ...(model.ciphers !== null ? { ciphers: model.ciphers } : {}),
    });
    this.#store.applyTo(server);
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      const raw = parentOf(socket);
      const owner = raw && this.#owners.get(raw);
      if (owner) owner.onTlsSecure(socket);
      else socket.destroy();
    });
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
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
    return server;
  }

  /**
   * Puts the holder's keys into the servers when they changed (a rotation, or
   * the previous key expiring), and after every context swap: a new context
   * would otherwise bring keys of its own.
   */
  #applyKeys(): void {
    const keys = this.#keys;
    if (keys === null || keys.generation === this.#appliedGeneration) return;
    const { generation, current, previous } = keys.read();
    this.#appliedGeneration = generation;
    this.#server.setTicketKeys(current);
    if (previous === null) {
      // Handshakes under way keep their socket's context; the server goes.
      this.#previous = null;
      this.#previousName = null;
      return;
    }
    this.#previous ??= this.#createServer();
    this.#previous.setTicketKeys(previous);
    this.#previousName = Buffer.from(previous.subarray(0, TICKET_KEY_NAME_BYTES));
  }

  /**
   * Whether accept() needs the connection's ClientHello, read first by the
   * front end: with strict_sni (to refuse unknown names before any handshake
   * work), and while a previous ticket key may still resume (to pick the
   * server that holds it). Outside those, no peek at all.
   */
  needsHello(): boolean {
    this.#applyKeys();
    return this.#model.strictSni || this.#previousName !== null;
  }

  /**
   * Start the handshake on an accepted socket; the owner hears how it ends,
   * exactly once. `hello`: the ClientHello the front end read (its bytes were
   * given back to the socket), or null when none was read.
   */
  accept(raw: net.Socket, owner: HandshakeOwner, hello: ClientHelloInfo | null = null): void {
    this.#applyKeys();
    if (this.#model.strictSni) {
      const refusal =
        hello === null
          ? 'the ClientHello was not read'
          : hello.sni === null
            ? 'no server name (SNI) in the ClientHello'
            : this.#store.match(hello.sni) === null
              ? `no certificate for server name "${hello.sni}"`
              : null;
      if (refusal !== null) {
        raw.write(UNRECOGNIZED_NAME_ALERT);
        owner.onTlsError(new Error(`strict_sni: ${refusal}`));
        return;
      }
    }
    this.#owners.set(raw, owner);
    (hello === null ? this.#server : this.#serverFor(hello)).emit('connection', raw);
  }

  /** The previous key's server for a resumption under that key; the current server for anything else. */
  #serverFor(hello: ClientHelloInfo): tls.Server {
    const name = this.#previousName;
    const previous = this.#previous;
    if (name === null || previous === null) return this.#server;
    if (hello.sessionTicket !== null && ticketNamesKey(hello.sessionTicket, name)) return previous;
    if (hello.pskIdentities.some((id) => ticketNamesKey(id, name))) return previous;
    return this.#server;
  }

  /** Serve new handshakes from `store` (after a reload); open connections keep theirs. */
  setStore(store: CertStore): void {
    this.#store = store;
    store.applyTo(this.#server);
    if (this.#previous !== null) store.applyTo(this.#previous);
    this.#appliedGeneration = -1;
    this.#applyKeys();
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
