/**
 * When a reload keeps something: the one rule for "the same socket" and
 * "the same server", shared by the running app (which keeps them) and the
 * reload preview (which says what it will keep).
 */
import type { EndpointText } from './address.js';

/** An endpoint as the reload compares it: as written, and as resolved. */
interface Address extends EndpointText {
  readonly port: number;
  readonly text: string;
}

/** The same address, as written and as resolved. */
export function sameAddress(a: Address, b: Address): boolean {
  return a.text === b.text && a.host === b.host && a.port === b.port;
}

/** The same bound address is the same socket; port 0 only within one listener (of the same name). */
export function sameSocket(
  a: { name: string; bind: Address; systemdSocket?: string | null },
  b: { name: string; bind: Address; systemdSocket?: string | null },
): boolean {
  const sa = a.systemdSocket ?? null;
  const sb = b.systemdSocket ?? null;
  if (sa !== null || sb !== null) return sa === sb;
  if (a.bind.host !== b.bind.host || a.bind.port !== b.bind.port) return false;
  return a.bind.port !== 0 || a.name === b.name;
}

/**
 * A server with the same name and the same address, as written and as
 * resolved, is the same server (it keeps its health, admin state, counters
 * and connections); any other is a new one.
 */
export function sameServer(a: { readonly name: string; readonly address: Address }, b: { readonly name: string; readonly address: Address }): boolean {
  return a.name === b.name && sameAddress(a.address, b.address);
}
