/**
 * A listener's front stages, in the order a connection meets them: PROXY
 * header in, admission (access lists, per-source limits), a protocol's own
 * opening (PostgreSQL: SSLRequest, CancelRequest), then TLS: the handshake
 * (terminate) or the ClientHello peek (passthrough), and for PostgreSQL the
 * first packet inside the terminated TLS (a cancel may come that way).
 */
import type { ListenerModel } from '../../config/model.js';
import type { CidrList } from '../../net/cidr.js';
import type { SharedPerSourceTable as PerSourceTable } from '../../protect/shared-per-source.js';
import type { TlsTerminator } from '../../tls/terminator.js';
import { PostgresOpeningStage } from '../../protocols/postgres/opening-stage.js';
import { PostgresTlsStartupStage } from '../../protocols/postgres/tls-startup-stage.js';
import { AdmitStage } from './admit.js';
import { ClientHelloStage } from './client-hello.js';
import { ProxyHeaderStage } from './proxy-header.js';
import type { FrontStage } from './stage.js';
import { TlsTerminateStage } from './tls-terminate.js';

export type { FrontStage, FrontState, StageDone } from './stage.js';

/** What the stages of one listener configuration are built from. */
export interface FrontParts {
  /** With accept_proxy: who may send a PROXY header. */
  readonly trustedProxies: CidrList | null;
  readonly allow: CidrList | null;
  readonly deny: CidrList | null;
  readonly perSource: PerSourceTable | null;
  /** tls.mode terminate: the handshake engine. */
  readonly terminator: TlsTerminator | null;
  /** The listener's pool speaks TLS to its servers (a plain postgres listener then refuses client TLS itself). */
  readonly poolSpeaksTls: boolean;
}

export function frontStages(model: ListenerModel, parts: FrontParts): FrontStage[] {
  const stages: FrontStage[] = [];
  if (model.acceptProxy) stages.push(new ProxyHeaderStage(parts.trustedProxies!));
  if (parts.allow !== null || parts.deny !== null || parts.perSource !== null) {
    stages.push(new AdmitStage(parts.allow, parts.deny, parts.perSource));
  }
  const postgres = model.protocol === 'postgres';
  if (postgres) {
    const mode = model.tls?.mode ?? 'plain';
    stages.push(new PostgresOpeningStage(mode, mode === 'plain' && parts.poolSpeaksTls));
  }
  if (model.tls?.mode === 'terminate') {
    const terminator = parts.terminator!;
    stages.push(new ClientHelloStage(() => terminator.needsHello()), new TlsTerminateStage(terminator));
    if (postgres) stages.push(new PostgresTlsStartupStage());
  } else if (model.tls?.mode === 'passthrough') {
    stages.push(new ClientHelloStage());
  }
  return stages;
}
