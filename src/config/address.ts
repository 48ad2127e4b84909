/**
 * Addresses in the configuration: `host:port` or `[v6]:port`. Host names of
 * binds are resolved once, when the configuration is loaded; servers' host
 * names are resolved by src/dns/ (at load, and again while l4lb runs).
 */

import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import type { Endpoint } from './model.js';
import { show } from './show.js';

/** An address that is well formed but not yet resolved. */
export interface ParsedAddress {
  /** Hostname or IP literal (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** As written in the configuration. */
  readonly text: string;
}

/** Options of {@link parseAddress}. */
export interface ParseAddressOptions {
  /** Listener binds may use port 0 (an ephemeral port, for tests); servers may not. */
  readonly allowPortZero?: boolean;
}

const BRACKETED = /^\[([^\]]*)\]:([^:]*)$/;
// RFC 1123 labels; `_` too, because container and service-discovery names use it.
const HOSTNAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const DOTTED_DIGITS = /^[0-9.]+$/;

/**
 * Checks the form of an address without resolving it.
 *
 * @returns the parts, or (a string) the message explaining what is wrong.
 */
export function parseAddress(value: unknown, options: ParseAddressOptions = {}): ParsedAddress | string {
  if (typeof value !== 'string') return `expected host:port, got ${show(value)}`;
  const got = show(value);
  let host: string;
  let portText: string;
  const bracketed = BRACKETED.exec(value);
  if (bracketed) {
    host = bracketed[1] ?? '';
    portText = bracketed[2] ?? '';
    if (isIP(host) !== 6) return `expected an IPv6 address inside the brackets, got ${got}`;
  } else if (value.startsWith('[')) {
    return `expected "[IPv6]:port", got ${got}`;
  } else {
    const colon = value.lastIndexOf(':');
    if (colon < 0) return `expected host:port, got ${got}`;
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
    if (host.includes(':')) return `expected host:port with an IPv6 host in brackets, like "[::1]:5432", got ${got}`;
    if (host === '') return `expected host:port, got ${got}`;
    if (isIP(host) !== 4) {
      // `999.1.1.1` would pass as a hostname and fail later as "cannot resolve".
      if (DOTTED_DIGITS.test(host)) return `expected a valid IPv4 address before the port, got ${got}`;
      if (!HOSTNAME.test(host)) return `expected a hostname or IP address before the port, got ${got}`;
    }
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return `expected host:port with a numeric port, got ${got}`;
  const port = Number(portText);
  const low = options.allowPortZero ? 0 : 1;
  if (port < low || port > 65535) return `expected a port between ${low} and 65535, got ${got}`;
  return { host, port, text: value };
}

/** Turns a parsed address into an endpoint, or a message saying why it cannot. */
export type Resolver = (address: ParsedAddress) => Promise<Endpoint | string>;

/** How long one name lookup may take before the configuration is rejected. */
export const LOOKUP_TIMEOUT_MS = 5_000;

/**
 * Creates a resolver for one load of the configuration. Each hostname is
 * looked up once however often it appears; IP literals are not looked up.
 *
 * @param timeoutMs - a lookup that takes longer is reported, so a dead DNS
 *   server cannot hang `l4lb check` or a reload.
 */
export function createResolver(timeoutMs: number = LOOKUP_TIMEOUT_MS): Resolver {
  const cache = new Map<string, Promise<string | { error: string }>>();
  return async (address) => {
    if (isIP(address.host)) return Object.freeze({ host: address.host, port: address.port, text: address.text });
    let pending = cache.get(address.host);
    if (!pending) {
      pending = lookup(address.host, timeoutMs);
      cache.set(address.host, pending);
    }
    const ip = await pending;
    if (typeof ip !== 'string') return ip.error;
    return Object.freeze({ host: ip, port: address.port, text: address.text });
  };
}

async function lookup(host: string, timeoutMs: number): Promise<string | { error: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ error: string }>((resolve) => {
    timer = setTimeout(() => resolve({ error: `cannot resolve host "${host}" (no answer within ${timeoutMs}ms)` }), timeoutMs);
    timer.unref();
  });
  const answer = dns.lookup(host).then(
    (result) => result.address,
    (err: NodeJS.ErrnoException) => ({ error: `cannot resolve host "${host}" (${err.code ?? err.message})` }),
  );
  try {
    return await Promise.race([answer, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** An endpoint to write out: an IP and port, and optionally the address as the configuration wrote it. */
export interface EndpointText {
  readonly host: string;
  readonly port?: number;
  /** As written in the configuration (`db.internal:5432`, `systemd:pg`); absent for a peer's address. */
  readonly text?: string;
}

/**
 * An endpoint for people, one spelling everywhere (the inverse of
 * {@link parseAddress}): `1.2.3.4:5432`, or `[::1]:5432` for IPv6. With
 * `text` (a configured address), that text, followed by what it resolved to
 * when that is spelled differently: `db.internal:5432 (10.0.0.5:5432)`;
 * an endpoint that was never resolved (`systemd:NAME`, empty host) is its
 * text alone. No endpoint at all (a field missing from an older instance's
 * document) is `?`.
 */
export function formatEndpoint(endpoint: EndpointText | null | undefined): string {
  if (endpoint === undefined || endpoint === null) return '?';
  const { host, port = 0, text } = endpoint;
  const resolved = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  if (text === undefined) return resolved;
  if (host === '') return text;
  const written = text.startsWith('[') ? text.slice(1, text.lastIndexOf(']')) : text.slice(0, text.lastIndexOf(':'));
  return written === host ? text : `${text} (${resolved})`;
}
