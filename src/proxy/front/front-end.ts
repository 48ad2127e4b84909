/**
 * Runs a listener's front stages on one connection, in order, under one
 * deadline (`timeouts.handshake`, armed only when a stage waits), and tells
 * its owner how it ended: done (route on what was learned), failed (a typed
 * error), or the client gone.
 */
import type net from 'node:net';
import { formatDuration } from '../../config/duration.js';
import type { L4lbError } from '../../errors.js';
import { normaliseIp } from '../../net/ip.js';
import type { FrontStage, FrontState, StageDone } from './stage.js';

export interface FrontOwner {
  /** Every stage said next: the state is complete. */
  frontDone(): void;
  /** A stage failed (an error), or the client went away (null). */
  frontFailed(err: L4lbError | null): void;
}

function noop(): void {}

export class FrontEnd implements FrontState, StageDone {
  readonly raw: net.Socket;
  client: net.Socket;
  clientIp: string;
  clientPort: number | undefined;
  destIp: string | undefined = undefined;
  destPort: number | undefined = undefined;
  headerBytes = 0;
  sni: string | null = null;
  hello: FrontState['hello'] = null;
  tls: FrontState['tls'] = null;
  admittedIp: string | undefined = undefined;
  postgres: FrontState['postgres'] = null;
  readonly #stages: readonly FrontStage[];
  readonly #owner: FrontOwner;
  #index = -1;
  #stop: (() => void) | void = undefined;
  #deadline: NodeJS.Timeout | undefined;
  #over = false;

  constructor(raw: net.Socket, stages: readonly FrontStage[], owner: FrontOwner) {
    this.raw = raw;
    this.client = raw;
    this.clientIp = normaliseIp(raw.remoteAddress);
    this.clientPort = raw.remotePort;
    this.#stages = stages;
    this.#owner = owner;
    // Stages listen for the errors they care about; an error between two of them must not crash the process.
    raw.on('error', noop);
  }

  /** Run the stages; `handshakeMs` bounds every stage that waits, together. */
  start(handshakeMs: number): void {
    if (this.#stages.some((s) => s.waits)) {
      this.#deadline = setTimeout(() => {
        this.#deadline = undefined;
        this.fail(this.#stages[this.#index]!.timeout(formatDuration(handshakeMs)));
      }, handshakeMs);
    }
    this.next();
  }

  /** The connection ended first (shutdown, or the session failed): stop the stage that runs. Idempotent. */
  stop(): void {
    if (this.#over) return;
    this.#over = true;
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
    const stop = this.#stop;
    this.#stop = undefined;
    if (stop) stop();
  }

  next(): void {
    if (this.#over) return;
    this.#stop = undefined;
    const index = ++this.#index;
    const stage = this.#stages[index];
    if (stage === undefined) {
      this.stop();
      this.#owner.frontDone();
      return;
    }
    const stop = stage.run(this, this);
    // A stage that decided at once has already moved on (or failed): its stop is no longer ours to keep.
    if (this.#index === index && !this.#over) this.#stop = stop;
  }

  finish(): void {
    if (this.#over) return;
    this.#index = this.#stages.length - 1;
    this.next();
  }

  fail(err: L4lbError): void {
    if (this.#over) return;
    this.stop();
    this.#owner.frontFailed(err);
  }

  gone(): void {
    if (this.#over) return;
    this.stop();
    this.#owner.frontFailed(null);
  }
}
