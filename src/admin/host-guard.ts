/**
 * The admin server's guard against DNS rebinding. A page that rebinds its own
 * name to 127.0.0.1 lets a browser reach the admin port, but the browser
 * still sends that name as Host, and the name can be neither an IP literal
 * nor `localhost`. So only those and the listen host are served; a request
 * without Host is served too (a browser always sends one).
 */
import net from 'node:net';
import type { Endpoint } from '../config/model.js';

/**
 * The host name of a Host header value, lower case, without port, brackets
 * or a trailing dot; null when it is not `host[:port]`.
 */
export function hostOf(header: string): string | null {
  const h = header.trim().toLowerCase();
  let name: string;
  let rest: string;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end < 0) return null;
    name = h.slice(1, end);
    rest = h.slice(end + 1);
  } else {
    const colon = h.indexOf(':');
    // Several colons without brackets: a bare IPv6 literal, no port.
    const bare = colon >= 0 && h.indexOf(':', colon + 1) >= 0;
    name = colon < 0 || bare ? h : h.slice(0, colon);
    rest = colon < 0 || bare ? '' : h.slice(colon);
  }
  if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/**
 * Whether a request with this Host header may be served: no Host, an IP
 * literal, `localhost`, or one of `listenHosts`.
 * @param listenHosts the listen address as written and as resolved, lower case (see {@link listenHostsOf})
 */
export function hostAllowed(header: string | undefined, listenHosts: ReadonlySet<string>): boolean {
  if (header === undefined || header.trim() === '') return true;
  const name = hostOf(header);
  if (name === null || name === '') return false;
  return net.isIP(name) !== 0 || name === 'localhost' || listenHosts.has(name);
}

/** The names a Host header may carry for this listen address: its host as written and as resolved, lower case, no trailing dot. */
export function listenHostsOf(listen: Endpoint): ReadonlySet<string> {
  const written = listen.text.startsWith('[') ? listen.text.slice(1, listen.text.lastIndexOf(']')) : listen.text.slice(0, listen.text.lastIndexOf(':'));
  return new Set([written, listen.host].map((h) => h.toLowerCase().replace(/\.$/, '')));
}
