/**
 * Access lists and per-source limits, checked against the client address
 * (the PROXY header's, when there is one) before any byte goes anywhere.
 * Decides at once; deny wins over allow.
 */
import { RejectedError, type L4lbError } from '../../errors.js';
import type { CidrList } from '../../net/cidr.js';
import type { SharedPerSourceTable as PerSourceTable } from '../../protect/shared-per-source.js';
import type { FrontStage, FrontState, StageDone } from './stage.js';

export class AdmitStage implements FrontStage {
  readonly waits = false;
  readonly #allow: CidrList | null;
  readonly #deny: CidrList | null;
  readonly #perSource: PerSourceTable | null;

  constructor(allow: CidrList | null, deny: CidrList | null, perSource: PerSourceTable | null) {
    this.#allow = allow;
    this.#deny = deny;
    this.#perSource = perSource;
  }

  timeout(): L4lbError {
    throw new Error('AdmitStage never waits');
  }

  run(state: FrontState, done: StageDone): void {
    const ip = state.clientIp;
    if (this.#deny !== null && this.#deny.has(ip)) return done.fail(new RejectedError('L4LB_REJECTED_ACL', 'deny'));
    if (this.#allow !== null && !this.#allow.has(ip)) return done.fail(new RejectedError('L4LB_REJECTED_ACL', 'not in allow'));
    if (this.#perSource !== null) {
      if (!this.#perSource.admit(ip)) return done.fail(new RejectedError('L4LB_REJECTED_LIMIT', 'per_source'));
      state.admittedIp = ip;
    }
    done.next();
  }
}
