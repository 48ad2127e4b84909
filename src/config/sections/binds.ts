/** Addresses bound by more than one part of the configuration (listeners and the admin server). */
import { isIP } from 'node:net';
import type { Endpoint } from '../model.js';
import type { Problems } from '../problems.js';

/** A bound address in the configuration: a listener's `bind` or the admin `listen`. */
export interface Bind {
  /** Path of the address itself, e.g. `listeners[1].bind`. */
  readonly path: string;
  /** Path of what binds it, e.g. `listeners[0]`, named in the other's message. */
  readonly owner: string;
  readonly bind: Endpoint;
}

/**
 * Two listeners (or a listener and the admin server) may not bind the same
 * port on the same address, nor on a wildcard address that covers the other
 * (`0.0.0.0` covers IPv4, `::` is dual-stack in Node and covers both); the
 * second would fail at start with EADDRINUSE. Port 0 never clashes: each
 * bind gets its own ephemeral port.
 */
export function checkBinds(problems: Problems, binds: readonly Bind[]): void {
  interface Seen {
    byHost: Map<string, Bind>;
    first?: Bind;
    firstV4?: Bind;
    anyV4?: Bind;
    anyV6?: Bind;
  }
  const ports = new Map<number, Seen>();
  for (const d of binds) {
    const { host, port, text } = d.bind;
    if (host === '' || port === 0) continue;
    let seen = ports.get(port);
    if (!seen) ports.set(port, (seen = { byHost: new Map() }));
    const v4 = isIP(host) === 4;
    const same = seen.byHost.get(host);
    const clash =
      same ??
      seen.anyV6 ??
      (host === '::' ? seen.first : undefined) ??
      (v4 ? seen.anyV4 : undefined) ??
      (host === '0.0.0.0' ? seen.firstV4 : undefined);
    if (clash) {
      const other = clash.bind.text;
      problems.add(
        d.path,
        same && other === text
          ? `duplicate bind address "${text}" (also ${clash.owner})`
          : `"${text}" overlaps "${other}" of ${clash.owner}`,
      );
      continue;
    }
    seen.byHost.set(host, d);
    seen.first ??= d;
    if (v4) seen.firstV4 ??= d;
    if (host === '0.0.0.0') seen.anyV4 ??= d;
    if (host === '::') seen.anyV6 ??= d;
  }
}
