/**
 * Per-client limits for one thread: the shared table (shared-per-source.ts,
 * where the rules are) made for a single worker. One implementation serves
 * both: measured single-threaded, it admits and releases IPv4 clients as
 * fast as the Map it replaced and IPv6 clients about twice as fast (no key
 * string is built), so a second one would only be a second place for bugs.
 */
import { newPerSourceBuffer, sharedClock, SharedPerSourceTable, type PerSourceLimits } from './shared-per-source.js';

export { DEFAULT_IPV6_PREFIX, DEFAULT_MAX_SOURCES, type PerSourceLimits } from './shared-per-source.js';

export class PerSourceTable extends SharedPerSourceTable {
  constructor(limits: PerSourceLimits, options: { maxSources?: number; now?: () => number } = {}) {
    super(newPerSourceBuffer(limits, { maxSources: options.maxSources }), 0, options.now ?? sharedClock, true);
  }
}
