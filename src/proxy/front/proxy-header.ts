/**
 * PROXY header in (`accept_proxy`): only a peer in `trusted_proxies` may
 * speak for a client, and it must start with a v1 or v2 header, which is
 * read and nothing more; bytes read past it are given back for the server.
 * From here on the client is the one the header names (LOCAL and UNKNOWN
 * headers keep the real peer).
 */
import { HandshakeTimeoutError, IncompleteHandshakeError, UntrustedProxyError, type L4lbError } from '../../errors.js';
import type { CidrList } from '../../net/cidr.js';
import { normaliseIp } from '../../net/ip.js';
import { ProxyHeaderError, ProxyHeaderParser } from '../../proxy-protocol/index.js';
import { formatEndpoint } from '../../config/address.js';
import { readSocket } from '../../net/socket-reader.js';
import type { FrontStage, FrontState, StageDone } from './stage.js';

export class ProxyHeaderStage implements FrontStage {
  readonly waits = true;
  readonly #trusted: CidrList;

  constructor(trusted: CidrList) {
    this.#trusted = trusted;
  }

  timeout(after: string): L4lbError {
    return new HandshakeTimeoutError('L4LB_PROXY_HEADER_INVALID', after);
  }

  run(state: FrontState, done: StageDone): (() => void) | void {
    const raw = state.raw;
    // Not an upstream we trust: refused before a single byte is read.
    if (!this.#trusted.has(raw.remoteAddress!)) return done.fail(new UntrustedProxyError(formatEndpoint({ host: state.clientIp, port: state.clientPort })));
    const parser = new ProxyHeaderParser();
    const stop = readSocket(raw, {
      data(chunk) {
        let result;
        try {
          result = parser.push(chunk);
        } catch (err) {
          stop();
          done.fail(err instanceof ProxyHeaderError ? err : new ProxyHeaderError('bad_signature', String(err)));
          return;
        }
        if (result.state === 'need_more') return;
        stop();
        if (result.rest.length > 0) raw.unshift(result.rest);
        state.headerBytes = result.header.length;
        const { source, destination } = result.header;
        if (source !== undefined && destination !== undefined) {
          state.clientIp = normaliseIp(source.address);
          state.clientPort = source.port;
          state.destIp = normaliseIp(destination.address);
          state.destPort = destination.port;
        }
        done.next();
      },
      // A FIN before the header is complete: it never will be. Nothing sent at
      // all (a TCP health check) is a plain close; part of a header is a failure.
      end() {
        stop();
        if (raw.bytesRead > 0) done.fail(new IncompleteHandshakeError('L4LB_PROXY_HEADER_INVALID'));
        else done.gone();
      },
      close() {
        stop();
        done.gone();
      },
    });
    return stop;
  }
}
