/**
 * Balancing algorithms behind one {@link Picker} interface, and the factory
 * that maps a pool's `balance` setting to one of them.
 */

import type { Balance } from '../config/model.js';
import { LeastConnPicker } from './least-conn.js';
import { LeastTimePicker } from './least-time.js';
import type { Candidate, Picker } from './picker.js';
import { RandomTwoPicker } from './random-two.js';
import { RoundRobinPicker, type PositionCounter } from './round-robin.js';
import { SourceHashPicker } from './source-hash.js';

export type { Candidate, Picker } from './picker.js';
export { LeastConnPicker } from './least-conn.js';
export { LEAST_TIME_ALPHA, LeastTimePicker, blendResponse, medianResponse } from './least-time.js';
export { RandomTwoPicker } from './random-two.js';
export { OwnCounter, RoundRobinPicker, type PositionCounter } from './round-robin.js';
export { SourceHashPicker, normaliseClientKey } from './source-hash.js';

/**
 * Build the picker for a pool's `balance` setting over the servers usable now.
 * Pickers are immutable views: build a new one when the set or weights change.
 * @throws RangeError on an unknown algorithm or a weight that is not a finite number > 0
 */
export function createPicker<S extends Candidate>(balance: Balance, servers: readonly S[], options: { position?: PositionCounter } = {}): Picker<S> {
  switch (balance) {
    case 'round_robin':
      return new RoundRobinPicker(servers, options.position);
    case 'least_conn':
      return new LeastConnPicker(servers);
    case 'source_hash':
      return new SourceHashPicker(servers);
    case 'random_two':
      return new RandomTwoPicker(servers);
    case 'least_time':
      return new LeastTimePicker(servers);
    default:
      // Reachable only from untyped callers.
      throw new RangeError(`unknown balance algorithm: ${String(balance satisfies never)}`);
  }
}
