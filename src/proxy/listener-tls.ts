/**
 * A terminating listener's TLS: certificates loaded (and re-read on reload),
 * the terminator built from them, and the session-ticket keys, which live as
 * long as the listener so that tickets survive reloads. Never shared with
 * another listener, whose tickets must not resume here; shared by every
 * serving thread's copy of this listener (the keys live in shared memory at
 * the listener's slot: the main thread rotates them, the others read), so a
 * session resumes on whichever thread the kernel hands the connection to.
 */
import type { ListenerModel } from '../config/model.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { certStoreOptions, loadCertificates, type CertLoadResult } from '../tls/cert-store.js';
import { TlsTerminator } from '../tls/terminator.js';
import { TicketKeys } from '../tls/ticket-keys.js';
import { TICKET_STRIDE, type SharedMemory } from '../shared/memory.js';

/** Whether `model` terminates TLS with session tickets on. */
function usesTickets(model: ListenerModel): boolean {
  return model.tls !== null && model.tls.mode === 'terminate' && model.tls.sessionTickets;
}

export class ListenerTls {
  readonly #name: string;
  readonly #logger: Logger;
  readonly #memory: SharedMemory;
  readonly #slot: number;
  #ticketKeys: TicketKeys | null = null;

  constructor(listenerName: string, logger: Logger, memory: SharedMemory, slot: number) {
    this.#name = listenerName;
    this.#logger = logger;
    this.#memory = memory;
    this.#slot = slot;
  }

  /** This listener's session-ticket keys; null while it issues no tickets. */
  get ticketKeys(): TicketKeys | null {
    return this.#ticketKeys;
  }

  /**
   * The terminator for `model` (null when it does not terminate TLS), with
   * certificates read from disk now. Rejects with ConfigError naming the
   * files; warnings (expired certificates) are logged.
   */
  async terminatorFor(model: ListenerModel): Promise<TlsTerminator | null> {
    const t = model.tls;
    if (t === null || t.mode !== 'terminate') return null;
    const result = await loadCertificates(t.certs, certStoreOptions(t));
    for (const w of result.warnings) this.#logger.warn({ warning: w }, 'certificate warning');
    if (!result.ok) throw this.#problems(result);
    return new TlsTerminator(t, result.store, model.timeouts.handshakeMs, this.#keysFor(model));
  }

  /** A reload committed `model`: ticket keys go away when it no longer issues tickets. */
  committed(model: ListenerModel): void {
    if (!usesTickets(model)) this.close();
  }

  /** Stop the key rotation and forget the keys. Idempotent. */
  close(): void {
    this.#ticketKeys?.close();
    this.#ticketKeys = null;
  }

  #keysFor(model: ListenerModel): TicketKeys | null {
    if (!usesTickets(model)) return null;
    if (this.#ticketKeys === null) {
      this.#ticketKeys = new TicketKeys({
        block: { buffer: this.#memory.tickets, offset: this.#slot * TICKET_STRIDE },
        owner: this.#memory.thread === 0,
      });
      this.#ticketKeys.start();
    }
    return this.#ticketKeys;
  }

  #problems(result: Extract<CertLoadResult, { ok: false }>): ConfigError {
    const where = `listener ${this.#name}: tls`;
    return new ConfigError(result.problems.map((p) => ({ path: p.path === '' ? where : `${where}.${p.path}`, message: p.message })));
  }
}
