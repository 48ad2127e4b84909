/**
 * Every invariant of the shared per-source table, checked: what
 * SharedPerSourceTable.audit() reports (O(table); for tests and
 * diagnostics, never on the connection path).
 */
import { entries } from './entries.js';
import { E_INTS, E_LISTED, E_NEXT, E_OPEN, E_PREV, E_STATE, H_FREE, H_HEAD, H_HWM, H_SIZE, H_TAIL, LIVE } from './layout.js';

const { slotOf } = entries;

/**
 * The problems of the table over these views, under its lock: open counts
 * against the columns, the refilling list against the entries without
 * connections, the index, the free list and the size against the live
 * entries. An empty list means the table is consistent.
 */
export function auditLocked(i32: Int32Array, index: Int32Array, cols: Int32Array, maxSources: number, workers: number): string[] {
  const problems: string[] = [];
  const S = maxSources;
  const mask = index.length - 1;
  const hwm = i32[H_HWM]!;
  let live = 0;
  let listed = 0;
  for (let e = 0; e < hwm; e++) {
    const at = e * E_INTS;
    let sum = 0;
    for (let w = 0; w < workers; w++) {
      const c = cols[w * S + e]!;
      if (c < 0) problems.push(`entry ${e}: worker ${w} holds ${c}`);
      sum += c;
    }
    if (i32[at + E_STATE] !== LIVE) {
      if (sum !== 0) problems.push(`free entry ${e} has ${sum} in the columns`);
      continue;
    }
    live++;
    if (i32[at + E_OPEN] !== sum) problems.push(`entry ${e}: open ${i32[at + E_OPEN]} but columns sum to ${sum}`);
    if (i32[at + E_LISTED] === 1) listed++;
    if (sum === 0 && i32[at + E_LISTED] !== 1) problems.push(`entry ${e} holds no connection and is not on the refilling list`);
    if (sum > 0 && i32[at + E_LISTED] === 1) problems.push(`entry ${e} holds connections and is on the refilling list`);
    if (slotOf(i32, index, mask, e) < 0) problems.push(`entry ${e} is not in the index`);
  }
  if (live !== i32[H_SIZE]) problems.push(`size ${i32[H_SIZE]} but ${live} live entries`);
  let slots = 0;
  for (let i = 0; i <= mask; i++) {
    const s = index[i]!;
    if (s === 0) continue;
    slots++;
    const e = (s & 0xffffff) - 1;
    if (e >= hwm || i32[e * E_INTS + E_STATE] !== LIVE) problems.push(`index slot ${i} names free entry ${e}`);
  }
  if (slots !== live) problems.push(`${slots} index slots for ${live} live entries`);
  let free = 0;
  for (let e = i32[H_FREE]!; e >= 0 && free <= hwm; e = i32[e * E_INTS + E_NEXT]!) {
    if (i32[e * E_INTS + E_STATE] === LIVE) problems.push(`live entry ${e} is on the free list`);
    free++;
  }
  if (free + live !== hwm) problems.push(`${free} free + ${live} live entries, but ${hwm} were ever used`);
  let walked = 0;
  let prev = -1;
  for (let e = i32[H_HEAD]!; e >= 0 && walked <= hwm; e = i32[e * E_INTS + E_NEXT]!) {
    if (i32[e * E_INTS + E_PREV] !== prev) problems.push(`refilling list: entry ${e} does not point back to ${prev}`);
    prev = e;
    walked++;
  }
  if (prev !== i32[H_TAIL]) problems.push(`refilling list ends at ${prev}, tail says ${i32[H_TAIL]}`);
  if (walked !== listed) problems.push(`refilling list has ${walked} entries, ${listed} are marked`);
  return problems;
}
