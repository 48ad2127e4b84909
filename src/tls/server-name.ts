/** TLS server names (SNI, certificate names, backend servername) as l4lb compares them. */

/**
 * Canonical form of a TLS server name for comparisons: ASCII lower case, one
 * trailing dot removed (`Example.COM.` → `example.com`).
 */
export function normaliseServerName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Whether `name` (already normalised, no trailing dot) is a DNS host name:
 * 1-253 characters, dot-separated labels of 1-63 letters, digits, hyphens
 * and underscores, no label starting or ending with a hyphen.
 *
 * Underscores are tolerated because internal names use them and TLS stacks
 * accept them; IP-address-shaped names pass too (RFC 6066 forbids them,
 * but they are harmless for routing and some clients send them).
 */
export function isValidDnsName(name: string): boolean {
  const n = name.length;
  if (n === 0 || n > 253) return false;
  let labelLen = 0;
  let prev = 0x2e;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (labelLen === 0 || prev === 0x2d) return false;
      labelLen = 0;
    } else {
      const ok =
        (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x2d;
      if (!ok) return false;
      if (c === 0x2d && labelLen === 0) return false;
      if (++labelLen > 63) return false;
    }
    prev = c;
  }
  return labelLen > 0 && prev !== 0x2d;
}
