/**
 * The shared per-source table (src/protect/shared-per-source.ts): the rules
 * of the per-source limits (bounded; an entry that holds open connections or
 * a refilling bucket is never forgotten; IPv6 counted per network), kept in
 * one SharedArrayBuffer, exact when several threads admit and release at
 * once, and whole again after a thread dies, even one that died holding the
 * lock halfway through an update.
 *
 * First the table in one thread (a fake clock, a plain Map model to compare
 * decisions with), then real worker threads (test/helpers/per-source-worker.ts)
 * on one buffer. Every loop is bounded; speed is never asserted.
 */
import { Worker } from 'node:worker_threads';
import t, { type Test } from 'tap';
import { prefixKey } from '../src/net/ip.js';
import { PerSourceTable } from '../src/protect/per-source.js';
import {
  LAYOUT,
  LOCK_PATIENCE_MS,
  SharedPerSourceTable,
  sharedClock,
  sharedPerSourceBytes,
  type PerSourceLimits,
} from '../src/protect/shared-per-source.js';
import { hammer, type HammerJob, type HammerReport, type Job, type WorkerInput } from './helpers/per-source-worker.js';
import { seededRandom } from './helpers/random.js';

// ---------------------------------------------------------------------------
// One thread

t.test("the issue's churn: 100 slots, max_connections 2, 100 other sources in between: the source still has at most 2 open", async (t) => {
  const table = SharedPerSourceTable.create({ maxConnections: 2, connectRate: 0 }, { maxSources: 100, now: () => 0 });
  const open = new Map<string, number>();
  const admit = (ip: string): boolean => {
    const ok = table.admit(ip);
    if (ok) open.set(ip, (open.get(ip) ?? 0) + 1);
    return ok;
  };
  const release = (ip: string): void => {
    table.release(ip);
    open.set(ip, open.get(ip)! - 1);
  };
  t.ok(admit('10.9.9.9') && admit('10.9.9.9'), 'two admitted');
  for (let i = 0; i < 100; i++) admit(`192.0.2.${i}`);
  t.equal(table.size, 100, 'the table is full');
  t.notOk(admit('192.0.2.100'), 'a 101st source is refused: every entry holds an open connection');
  t.notOk(admit('10.9.9.9'), 'a third from the first source is refused');
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 100; i++) if ((open.get(`192.0.2.${i}`) ?? 0) > 0) release(`192.0.2.${i}`);
    for (let i = 0; i < 100; i++) admit(`198.51.${round}.${i}`);
    t.notOk(admit('10.9.9.9'), `round ${round + 1}: still refused`);
  }
  release('10.9.9.9');
  t.ok(admit('10.9.9.9'), 'a slot freed by its own connection is usable again');
  t.notOk(admit('10.9.9.9'));
  t.equal(open.get('10.9.9.9'), 2, 'never more than 2 open');
  t.same(table.audit(), []);
});

t.test('an entry whose bucket is still refilling is kept: churn cannot reset a connect rate', async (t) => {
  let now = 0;
  const table = SharedPerSourceTable.create({ maxConnections: 0, connectRate: 5 }, { maxSources: 10, now: () => now });
  for (let i = 0; i < 5; i++) {
    t.ok(table.admit('10.9.9.9'), `burst connection ${i + 1}`);
    table.release('10.9.9.9');
  }
  t.notOk(table.admit('10.9.9.9'), 'the sixth within the second is refused');
  let others = 0;
  for (let i = 0; i < 100; i++) {
    if (table.admit(`192.0.2.${i}`)) {
      others++;
      table.release(`192.0.2.${i}`);
    }
  }
  t.equal(others, 9, 'other sources fill the free slots, then are refused');
  t.notOk(table.admit('10.9.9.9'), 'the churn did not give the first source a fresh bucket');
  now += 100;
  t.notOk(table.admit('10.9.9.9'), 'half a token after 100 ms at 5/s');
  t.notOk(table.admit('203.0.113.1'), 'no bucket is full yet: a new source is still refused');
  now += 100;
  t.ok(table.admit('10.9.9.9'), 'one token back after 200 ms');
  t.notOk(table.admit('10.9.9.9'));
  t.ok(table.admit('203.0.113.1'), "the other sources' buckets are full again: one is forgotten to make room");
  t.same(table.audit(), []);
});

/** The per-source rules written as plainly as possible (a Map, as the table was before it was shared): the model to compare with. */
class ModelTable {
  readonly #entries = new Map<string, { active: number; tokens: number; at: number }>();
  readonly #refilling = new Map<string, { active: number; tokens: number; at: number }>();
  constructor(
    readonly limits: Required<PerSourceLimits>,
    readonly maxSources: number,
    readonly now: () => number,
  ) {}
  get size(): number {
    return this.#entries.size;
  }
  admit(ip: string): boolean {
    const key = prefixKey(ip, this.limits.ipv6Prefix);
    const now = this.now();
    const rate = this.limits.connectRate;
    let e = this.#entries.get(key);
    if (e === undefined) {
      if (this.#entries.size >= this.maxSources && !this.#forgetOne(now)) return false;
      e = { active: 0, tokens: rate, at: now };
      this.#entries.set(key, e);
    } else {
      if (rate > 0) {
        this.#refill(e, now);
        if (e.tokens < 1) return false;
      }
      if (this.limits.maxConnections > 0 && e.active >= this.limits.maxConnections) return false;
    }
    if (rate > 0) e.tokens -= 1;
    if (e.active++ === 0) this.#refilling.delete(key);
    return true;
  }
  release(ip: string): void {
    const key = prefixKey(ip, this.limits.ipv6Prefix);
    const e = this.#entries.get(key);
    if (e === undefined || e.active === 0 || --e.active > 0) return;
    this.#refill(e, this.now());
    if (this.#holdsNothing(e)) this.#entries.delete(key);
    else this.#refilling.set(key, e);
  }
  sweep(): void {
    for (const [key, e] of this.#refilling) {
      this.#refill(e, this.now());
      if (this.#holdsNothing(e)) {
        this.#entries.delete(key);
        this.#refilling.delete(key);
      }
    }
  }
  #refill(e: { tokens: number; at: number }, now: number): void {
    const rate = this.limits.connectRate;
    if (rate <= 0) return;
    e.tokens = Math.min(rate, e.tokens + ((now - e.at) / 1000) * rate);
    e.at = now;
  }
  #holdsNothing(e: { active: number; tokens: number }): boolean {
    return e.active === 0 && (this.limits.connectRate <= 0 || e.tokens >= this.limits.connectRate);
  }
  #forgetOne(now: number): boolean {
    let scanned = 0;
    for (const [key, e] of this.#refilling) {
      this.#refill(e, now);
      if (this.#holdsNothing(e)) {
        this.#entries.delete(key);
        this.#refilling.delete(key);
        return true;
      }
      if (++scanned >= 16) break;
    }
    return false;
  }
}

t.test('random churn over 300 sources and 100 slots: every decision and size is the Map model\'s, and no source exceeds its limits', async (t) => {
  const MAX = 3;
  const RATE = 4;
  for (const seed of [1, 2, 3, 42]) {
    const rnd = seededRandom(seed);
    let now = 0;
    const limits = { maxConnections: MAX, connectRate: RATE, ipv6Prefix: 64 };
    const table = SharedPerSourceTable.create(limits, { maxSources: 100, now: () => now });
    const model = new ModelTable(limits, 100, () => now);
    const open = new Map<string, number>();
    const admittedAt = new Map<string, number[]>();
    let worstOpen = 0;
    let worstWindow = 0;
    let refused = 0;
    let disagreements = 0;
    for (let step = 0; step < 20_000; step++) {
      now += Math.floor(rnd() * 20);
      const ip = rnd() < 0.7 ? `10.0.${Math.floor(rnd() * 2)}.${Math.floor(rnd() * 150)}` : `2001:db8:${Math.floor(rnd() * 40).toString(16)}::${Math.floor(rnd() * 9)}`;
      const held = open.get(ip) ?? 0;
      if (held > 0 && rnd() < 0.45) {
        table.release(ip);
        model.release(ip);
        open.set(ip, held - 1);
      } else {
        const ok = table.admit(ip);
        if (ok !== model.admit(ip)) disagreements++;
        if (ok) {
          open.set(ip, held + 1);
          worstOpen = Math.max(worstOpen, held + 1);
          const times = (admittedAt.get(ip) ?? []).filter((at) => at > now - 1_000);
          times.push(now);
          admittedAt.set(ip, times);
          worstWindow = Math.max(worstWindow, times.length);
        } else {
          refused++;
        }
      }
      if (step % 997 === 0) {
        table.sweep();
        model.sweep();
      }
      if (table.size !== model.size) disagreements++;
    }
    t.equal(disagreements, 0, `seed ${seed}: the same decisions and sizes as the model`);
    t.ok(worstOpen <= MAX, `seed ${seed}: at most ${MAX} open per address (saw ${worstOpen})`);
    t.ok(worstWindow <= 2 * RATE, `seed ${seed}: at most ${2 * RATE} admitted in any second per address (saw ${worstWindow})`);
    t.ok(refused > 0, `seed ${seed}: the limits did refuse (${refused})`);
    t.same(table.audit(), [], `seed ${seed}: the table is consistent`);
  }
});

t.test('with only max_connections, a source with no open connection is forgotten at once', async (t) => {
  const table = SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0 }, { maxSources: 2, now: () => 0 });
  t.ok(table.admit('10.0.0.1'));
  t.ok(table.admit('10.0.0.2'));
  t.notOk(table.admit('10.0.0.3'), 'full of open connections');
  table.release('10.0.0.1');
  t.equal(table.size, 1, 'nothing left to remember about 10.0.0.1');
  t.ok(table.admit('10.0.0.3'));
  table.release('10.0.0.9');
  table.release('10.0.0.1');
  t.equal(table.size, 2, 'a release for an unknown or closed source changes nothing');
  t.same(table.audit(), []);
});

t.test('sweep forgets what holds nothing and keeps open connections and refilling buckets', async (t) => {
  let now = 0;
  const table = SharedPerSourceTable.create({ maxConnections: 5, connectRate: 10 }, { now: () => now });
  table.admit('10.0.0.1'); // stays open
  table.admit('10.0.0.2');
  table.release('10.0.0.2'); // refilling
  now += 50;
  table.sweep();
  t.equal(table.size, 2, 'both still hold something');
  now += 100;
  table.sweep();
  t.equal(table.size, 1, 'the refilled one is forgotten, the open one kept');
  table.release('10.0.0.1');
  now += 100;
  table.sweep();
  t.equal(table.size, 0);
  t.same(table.audit(), []);
});

t.test('sweep looks at every refilling entry, however many there are', async (t) => {
  let now = 0;
  const table = SharedPerSourceTable.create({ maxConnections: 0, connectRate: 2 }, { maxSources: 5_000, now: () => now });
  // 3,000 sources each leave a bucket half empty, a millisecond apart: more than one chunk of the sweep.
  for (let i = 0; i < 3_000; i++) {
    now += 1;
    const ip = `10.1.${i >> 8}.${i & 255}`;
    table.admit(ip);
    table.release(ip);
  }
  // One token back takes 500 ms at 2/s: 250 ms after the last, the first 2,750 are full again.
  now = 3_000 + 250;
  table.sweep();
  t.equal(table.size, 250, 'those still refilling are kept');
  t.same(table.audit(), []);
  now += 1_000;
  table.sweep();
  t.equal(table.size, 0, 'a second later all are forgotten');
});

t.test('IPv6 clients share a limit per /64 by default; other /64s and IPv4 addresses have their own', async (t) => {
  const table = SharedPerSourceTable.create({ maxConnections: 2, connectRate: 0 });
  t.ok(table.admit('2001:db8:1:2::1'));
  t.ok(table.admit('2001:db8:1:2:ffff:ffff:ffff:ffff'));
  t.notOk(table.admit('2001:db8:1:2::3'), 'a third address in the same /64 is over the limit');
  t.notOk(table.admit('2001:DB8:0001:0002:0:0:0:9'), 'whatever the spelling');
  t.ok(table.admit('2001:db8:1:3::1'), 'the next /64 has its own limit');
  table.release('2001:db8:1:2::1');
  t.ok(table.admit('2001:db8:1:2::77'), 'a release by any address of the /64 frees a slot of the /64');
  t.ok(table.admit('192.0.2.1') && table.admit('192.0.2.1'));
  t.notOk(table.admit('192.0.2.1'), 'IPv4: per address');
  t.ok(table.admit('192.0.2.2'), 'the neighbouring IPv4 address is another client');
  t.ok(table.admit('::ffff:192.0.2.3') && table.admit('192.0.2.3'));
  t.notOk(table.admit('192.0.2.3'), 'an IPv4-mapped address counts as its IPv4 address');
  t.notOk(table.admit('::FFFF:c000:203'), 'in any spelling');
});

t.test('ipv6Prefix sets the grouping: /48, /128, and a prefix inside a group; out of range is a RangeError', async (t) => {
  const by48 = SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0, ipv6Prefix: 48 });
  t.ok(by48.admit('2001:db8:1:2::1'));
  t.notOk(by48.admit('2001:db8:1:ffff::1'), '/48: the same site');
  t.ok(by48.admit('2001:db8:2::1'));
  const by128 = SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0, ipv6Prefix: 128 });
  t.ok(by128.admit('2001:db8::1'));
  t.ok(by128.admit('2001:db8::2'), '/128: per address');
  t.notOk(by128.admit('2001:db8:0:0:0:0:0:1'));
  const by56 = SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0, ipv6Prefix: 56 });
  t.ok(by56.admit('2001:db8:1:200::1'));
  t.notOk(by56.admit('2001:db8:1:2ff::1'), '/56: the low byte of the fourth group is host part');
  t.ok(by56.admit('2001:db8:1:300::1'));
  t.throws(() => SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0, ipv6Prefix: 129 }), RangeError);
  t.throws(() => new PerSourceTable({ maxConnections: 1, connectRate: 0, ipv6Prefix: -1 }), RangeError);
  t.throws(() => SharedPerSourceTable.create({ maxConnections: 1.5, connectRate: 0 }), RangeError);
  t.throws(() => SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0 }, { workers: 257 }), RangeError);
  t.throws(() => SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0 }, { maxSources: 0 }), RangeError);
});

t.test('clients are grouped exactly as prefixKey groups them, for any spelling, prefix, or text that is no address', async (t) => {
  const rnd = seededRandom(7);
  const hex = (n: number): string => Math.floor(rnd() * n).toString(16);
  const spell = (groups: number[]): string => {
    // Random case, leading zeros, and a random run of zero groups as '::' (or none).
    const parts = groups.map((g) => {
      const h = g.toString(16);
      const padded = rnd() < 0.3 ? h.padStart(4, '0') : h;
      return rnd() < 0.5 ? padded.toUpperCase() : padded;
    });
    const zeroRuns: number[] = [];
    for (let i = 0; i < 8; i++) if (groups[i] === 0) zeroRuns.push(i);
    if (zeroRuns.length > 0 && rnd() < 0.7) {
      const start = zeroRuns[Math.floor(rnd() * zeroRuns.length)]!;
      let end = start;
      while (end + 1 < 8 && groups[end + 1] === 0) end++;
      return `${parts.slice(0, start).join(':')}::${parts.slice(end + 1).join(':')}`;
    }
    return parts.join(':');
  };
  const v6 = (): string => {
    // Few distinct values per group, so that random pairs often share networks.
    const groups = [0x2001, 0xdb8, ...Array.from({ length: 6 }, () => (rnd() < 0.5 ? 0 : Math.floor(rnd() * 3) * 0x4001))];
    return spell(groups);
  };
  const v4 = (): string => `${Math.floor(rnd() * 3)}.0.0.${Math.floor(rnd() * 3)}`;
  const any = (): string => {
    const r = rnd();
    if (r < 0.35) return v6();
    if (r < 0.6) return v4();
    if (r < 0.7) return `::ffff:${v4()}`;
    if (r < 0.75) return `::FFFF:${hex(3)}:${hex(3)}`;
    if (r < 0.8) return `fe80::${hex(3)}%eth${hex(2)}`;
    const junk = ['', 'unknown', '1.2.3', '01.2.3.4', '1.2.3.4.5', 'a'.repeat(20), '1.2.3.4/24', '2001:db8::1::2', '999.1.1.1', '1.2.3.4 '];
    return junk[Math.floor(rnd() * junk.length)]!;
  };
  let checked = 0;
  let same = 0;
  const wrong: string[] = [];
  for (const prefix of [0, 1, 16, 31, 32, 33, 48, 56, 63, 64, 65, 96, 112, 127, 128]) {
    const table = SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0, ipv6Prefix: prefix }, { maxSources: 4 });
    for (let i = 0; i < 300; i++) {
      const a = any();
      const b = rnd() < 0.3 ? a : any();
      const expected = prefixKey(a, prefix) === prefixKey(b, prefix);
      if (table.keyOf(a) !== prefixKey(a, prefix)) wrong.push(`/${prefix}: keyOf(${JSON.stringify(a)})`);
      if (!table.admit(a)) wrong.push(`/${prefix}: ${JSON.stringify(a)} refused in an empty table`);
      const shares = !table.admit(b);
      if (!shares) table.release(b);
      table.release(a);
      if (shares !== expected) wrong.push(`/${prefix}: ${JSON.stringify(a)} and ${JSON.stringify(b)} ${expected ? 'should' : 'should not'} share a count`);
      if (expected) same++;
      checked++;
    }
    if (table.size !== 0) wrong.push(`/${prefix}: ${table.size} entries left`);
  }
  t.ok(same > 200 && same < checked - 200, `both kinds of pairs are tried (${same} of ${checked} are one client)`);
  t.same(wrong, [], 'every pair as prefixKey groups it');
});

t.test('handles on one buffer share the counts: connections add up over workers, and each worker releases only what it holds', async (t) => {
  const main = SharedPerSourceTable.create({ maxConnections: 3, connectRate: 0 }, { workers: 3, maxSources: 10 });
  const one = SharedPerSourceTable.attach(main.buffer, { worker: 1 });
  const two = SharedPerSourceTable.attach(main.buffer, { worker: 2 });
  t.ok(main.admit('192.0.2.1') && one.admit('192.0.2.1') && two.admit('192.0.2.1'), 'one connection on each worker');
  t.notOk(one.admit('192.0.2.1'), 'a fourth on any worker is refused');
  two.release('192.0.2.7');
  one.release('192.0.2.1');
  one.release('192.0.2.1');
  t.ok(two.admit('192.0.2.1'), "worker 1's one release freed one slot; its second changed nothing");
  t.notOk(main.admit('192.0.2.1'));
  t.equal(one.size, 1);
  t.same([main.worker, one.worker, two.worker, one.workers], [0, 1, 2, 3]);
  t.same(two.audit(), []);
});

t.test('releaseWorker takes back everything one worker held and nothing the others hold', async (t) => {
  const main = SharedPerSourceTable.create({ maxConnections: 2, connectRate: 10 }, { workers: 2, maxSources: 3_000 });
  const one = SharedPerSourceTable.attach(main.buffer, { worker: 1 });
  for (let i = 0; i < 2_500; i++) one.admit(`10.2.${i >> 8}.${i & 255}`); // more than one chunk
  t.ok(main.admit('192.0.2.1') && one.admit('192.0.2.1'));
  t.notOk(main.admit('192.0.2.1'), 'at the limit');
  await main.releaseWorker(1);
  t.ok(main.admit('192.0.2.1'), "worker 1's connection no longer counts");
  t.notOk(main.admit('192.0.2.1'), "main's two still do");
  t.equal(main.size, 2_501, 'the other clients are kept while their buckets refill');
  t.same(main.audit(), []);
  await t.rejects(main.releaseWorker(2), RangeError);
});

t.test('attach reads the limits and sizes from the buffer, and refuses a foreign buffer or a worker out of range', async (t) => {
  const main = SharedPerSourceTable.create({ maxConnections: 7, connectRate: 9, ipv6Prefix: 56 }, { workers: 4, maxSources: 1_000 });
  const w = SharedPerSourceTable.attach(main.buffer, { worker: 3 });
  t.same(w.limits, { maxConnections: 7, connectRate: 9, ipv6Prefix: 56 });
  t.equal(w.maxSources, 1_000);
  t.equal(w.workers, 4);
  t.equal(main.buffer.byteLength, sharedPerSourceBytes(1_000, 4));
  t.throws(() => SharedPerSourceTable.attach(main.buffer, { worker: 4 }), RangeError);
  t.throws(() => SharedPerSourceTable.attach(new SharedArrayBuffer(4096), { worker: 0 }), RangeError);
  t.throws(() => SharedPerSourceTable.attach(main.buffer.slice(0, 1024), { worker: 0 }), RangeError);
  t.equal(new PerSourceTable({ maxConnections: 1, connectRate: 0 }).maxSources, 100_000, 'the one-thread table: the default cap');
});

t.test('a lock that is never given back: admit refuses after LOCK_PATIENCE_MS and then at once, release waits for the next chance, nothing blocks for good', async (t) => {
  const main = SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0 }, { workers: 4, maxSources: 10 });
  t.ok(main.admit('192.0.2.1'));
  const i32 = new Int32Array(main.buffer);
  // Worker 3 "dies" holding the lock (nothing half done).
  Atomics.store(i32, LAYOUT.lock, LAYOUT.ownerOf(3));
  let at = performance.now();
  t.notOk(main.admit('192.0.2.2'), 'refused');
  const waited = performance.now() - at;
  t.ok(waited >= LOCK_PATIENCE_MS - 5, `after waiting its patience (${waited.toFixed(0)} ms)`);
  at = performance.now();
  t.notOk(main.admit('192.0.2.3'), 'refused again');
  t.ok(performance.now() - at < LOCK_PATIENCE_MS, 'at once, while the same holder still holds it');
  main.release('192.0.2.1');
  t.equal(main.pendingReleases, 1, 'the release is kept');
  main.sweep();
  t.equal(main.pendingReleases, 1, 'sweep gives up too');
  t.match(main.audit(), [/lock is held by worker 3/]);
  await main.releaseWorker(3);
  t.equal(main.stats.repairs, 1, 'releaseWorker took the lock over from the dead worker');
  t.equal(main.pendingReleases, 0, 'and did the kept release');
  t.ok(main.admit('192.0.2.2'), 'admits again');
  t.ok(main.admit('192.0.2.1'), '192.0.2.1 was released');
  t.same(main.audit(), []);
});

t.test('an exception inside the critical section leaves the table unlocked and consistent, and is thrown on', async (t) => {
  const main = SharedPerSourceTable.create({ maxConnections: 1, connectRate: 0 }, { workers: 2, maxSources: 10 });
  const i32 = new Int32Array(main.buffer);
  // A "string" that fails once armed: the only way for code inside the lock to throw, short of running out of stack.
  let armed = false;
  const failing = (text: string): string =>
    ({
      length: text.length,
      charCodeAt(i: number): number {
        if (armed) throw new Error('injected');
        return text.charCodeAt(i);
      },
    }) as unknown as string;
  let round = 0;
  const poisoned = async (what: string, act: () => unknown): Promise<void> => {
    const fails = failing(`10.0.0.${++round}`);
    t.ok(main.admit(fails), `${what}: admitted`);
    // Its release has to wait (the lock is held by a dead worker 1) and so runs later, inside the lock.
    Atomics.store(i32, LAYOUT.lock, LAYOUT.ownerOf(1));
    main.release(fails);
    t.equal(main.pendingReleases, 1);
    Atomics.store(i32, LAYOUT.lock, 0);
    armed = true;
    try {
      await act();
      t.fail(`${what}: should throw`);
    } catch (err) {
      t.match(err, { message: 'injected' }, `${what}: the error is thrown on`);
    }
    armed = false;
    t.equal(Atomics.load(i32, LAYOUT.lock), 0, `${what}: the lock is free`);
    t.same(main.audit(), [], `${what}: the table is consistent`);
  };
  await poisoned('admit', () => main.admit('192.0.2.1'));
  await poisoned('release', () => main.release('192.0.2.1'));
  await poisoned('sweep', () => main.sweep());
  await poisoned('releaseWorker', () => main.releaseWorker(1));
  t.ok(main.admit('192.0.2.200'), 'the table still admits');
});

t.test('a worker that died halfway through an update: releaseWorker rebuilds the index, the lists and the counts from the live entries', async (t) => {
  let now = 0;
  const S = 200;
  const main = SharedPerSourceTable.create({ maxConnections: 3, connectRate: 10 }, { workers: 3, maxSources: S, now: () => now });
  const one = SharedPerSourceTable.attach(main.buffer, { worker: 1, now: () => now });
  const two = SharedPerSourceTable.attach(main.buffer, { worker: 2, now: () => now });
  for (let i = 0; i < 60; i++) {
    main.admit(`10.0.0.${i}`);
    two.admit(`10.0.0.${i}`);
  }
  for (let i = 0; i < 40; i++) one.admit(`10.0.1.${i}`);
  for (let i = 0; i < 20; i++) one.release(`10.0.1.${i}`); // refilling
  for (let i = 0; i < 3; i++) two.admit('192.0.2.1');
  t.same(main.audit(), [], 'consistent before');
  // Worker 2 dies in the critical section, and everything it could have been writing is left torn.
  const i32 = new Int32Array(main.buffer);
  Atomics.store(i32, LAYOUT.lock, LAYOUT.ownerOf(2));
  const index = new Int32Array(main.buffer, LAYOUT.indexByteOffset(S), (LAYOUT.columnsByteOffset(S) - LAYOUT.indexByteOffset(S)) / 4);
  const rnd = seededRandom(5);
  for (let i = 0; i < index.length; i += 3) index[i] = rnd() < 0.5 ? 0 : Math.floor(rnd() * 2 ** 31); // slots lost and junk
  i32[LAYOUT.listHead] = 77;
  i32[LAYOUT.listTail] = -1;
  i32[LAYOUT.freeHead] = 5;
  i32[LAYOUT.size] = 3;
  const hwm = i32[LAYOUT.highWater]!;
  i32[LAYOUT.highWater] = hwm + 1; // an entry being made: reserved, written, not yet live
  i32[hwm * LAYOUT.entryInts + LAYOUT.entry.open] = 99;
  i32[0 * LAYOUT.entryInts + LAYOUT.entry.open] = 42; // a torn open count (the columns hold the truth)
  await main.releaseWorker(2);
  t.equal(main.stats.repairs, 1, 'repaired');
  t.same(main.audit(), [], 'consistent after');
  t.ok(one.admit('192.0.2.1') && one.admit('192.0.2.1') && one.admit('192.0.2.1'), "worker 2's three connections no longer count");
  t.notOk(one.admit('192.0.2.1'), 'the limit still holds');
  let kept = 0;
  for (let i = 0; i < 60; i++) {
    if (one.admit(`10.0.0.${i}`) && one.admit(`10.0.0.${i}`) && !one.admit(`10.0.0.${i}`)) kept++;
  }
  t.equal(kept, 60, "each of main's clients still counts main's one connection: two more, then refused");
  for (let i = 20; i < 40; i++) one.release(`10.0.1.${i}`);
  now += 1_000;
  main.sweep();
  t.equal(main.size, 61, 'refilled buckets are forgotten; clients with connections are kept');
  t.same(main.audit(), []);
});

// ---------------------------------------------------------------------------
// Worker threads

const WORKER_URL = new URL('./helpers/per-source-worker.ts', import.meta.url);

interface Spawned {
  readonly worker: Worker;
  /** The next message from the worker (rejects if it fails). */
  next<T = Record<string, unknown>>(): Promise<T>;
  send(message: unknown): void;
}

/** A worker thread on `table` as worker `index`, terminated when `t` ends; resolves once it is ready. */
async function spawn(t: Test, table: SharedArrayBuffer, control: SharedArrayBuffer, index: number, job: Job): Promise<Spawned> {
  const input: WorkerInput = { table, worker: index, control, job };
  const worker = new Worker(WORKER_URL, { workerData: input });
  t.teardown(() => worker.terminate());
  const queue: unknown[] = [];
  const waiting: { resolve: (m: unknown) => void; reject: (e: unknown) => void }[] = [];
  let failure: unknown;
  worker.on('message', (m) => (waiting.length > 0 ? waiting.shift()!.resolve(m) : queue.push(m)));
  worker.on('error', (err) => {
    failure = err;
    for (const w of waiting.splice(0)) w.reject(err);
  });
  const spawned: Spawned = {
    worker,
    next<T>() {
      if (queue.length > 0) return Promise.resolve(queue.shift() as T);
      if (failure !== undefined) return Promise.reject(failure);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${index}: no message within 60 s`)), 60_000);
        waiting.push({
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
      });
    },
    send: (m) => worker.postMessage(m),
  };
  await spawned.next();
  return spawned;
}

/** [start flag, then one progress word per worker] */
function newControl(workers: number): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (1 + workers));
}

function start(control: SharedArrayBuffer): void {
  const c = new Int32Array(control);
  Atomics.store(c, 0, 1);
  Atomics.notify(c, 0);
}

/** Clients and the group each counts in at /64: IPv4 addresses, a mapped spelling of one, three /64s with several addresses. */
const CLIENTS = [
  ['192.0.2.1', 0],
  ['::ffff:192.0.2.1', 0],
  ['192.0.2.2', 1],
  ['10.0.0.1', 2],
  ['2001:db8:1:2::1', 3],
  ['2001:db8:1:2::ffff', 3],
  ['2001:DB8:1:2:0:0:0:7', 3],
  ['2001:db8:1:3::1', 4],
  ['2001:db8:1:3:8000::1', 4],
  ['2001:db8:99::1', 5],
  ['172.16.0.1', 6],
  ['172.16.0.2', 7],
] as const;
const SOURCES = CLIENTS.map(([ip]) => ip);
const GROUPS = CLIENTS.map(([, g]) => g);

t.test('three worker threads and the main thread hammering the same clients never admit more than max_connections for any, and every count returns to zero', async (t) => {
  const THREADS = 3;
  const MAX = 3;
  for (const config of [
    { name: 'max_connections only', limits: { maxConnections: MAX, connectRate: 0 }, maxSources: 64 },
    { name: 'with a connect rate and 6 slots for 8 clients (forgetting and refusing under contention)', limits: { maxConnections: MAX, connectRate: 5_000 }, maxSources: 6 },
  ]) {
    const main = SharedPerSourceTable.create(config.limits, { workers: THREADS + 1, maxSources: config.maxSources });
    const truth = new SharedArrayBuffer(4 * 8);
    const control = newControl(THREADS + 1);
    const job = (seed: number, ops: number): HammerJob => ({ kind: 'hammer', sources: SOURCES, groups: GROUPS, truth, ops, seed });
    const workers = await Promise.all(Array.from({ length: THREADS }, (_, i) => spawn(t, main.buffer, control, i + 1, job(100 + i, 150_000))));
    start(control);
    const mine = hammer(main, job(99, 100_000));
    const reports = [mine, ...(await Promise.all(workers.map((w) => w.next<{ done: HammerReport }>()))).map((m) => m.done)];
    const worst = GROUPS.map((_, g) => Math.max(...reports.map((r) => r.maxSeen[g] ?? 0)));
    t.ok(
      worst.every((n) => n <= MAX),
      `${config.name}: at most ${MAX} open per client at any moment across threads (most seen: ${worst.slice(0, 8).join(' ')})`,
    );
    t.ok(worst.some((n) => n === MAX), `${config.name}: clients did reach the limit`);
    t.ok(reports.every((r) => r.admitted > 0 && r.refused > 0), `${config.name}: every thread was admitted and refused`);
    t.same(Array.from(new Int32Array(truth)), [0, 0, 0, 0, 0, 0, 0, 0], `${config.name}: every connection was released`);
    t.same(reports.map((r) => r.pending), [0, 0, 0, 0], `${config.name}: no release waited for the lock at the end`);
    // Buckets refill within a second: a clock a second ahead sees them all full.
    SharedPerSourceTable.attach(main.buffer, { worker: 0, now: () => sharedClock() + 1_000 }).sweep();
    t.equal(main.size, 0, `${config.name}: no entry left`);
    t.same(main.audit(), [], `${config.name}: the table is consistent`);
    t.comment(`${config.name}: ${reports.reduce((n, r) => n + r.admitted, 0)} admitted, ${main.stats.waits} sleeps on the lock`);
  }
});

t.test('worker threads admitting at full speed: no client gets more than its connect_rate bucket allows across all of them', async (t) => {
  const THREADS = 3;
  const RATE = 50;
  const main = SharedPerSourceTable.create({ maxConnections: 0, connectRate: RATE }, { workers: THREADS + 1, maxSources: 64 });
  const control = newControl(THREADS + 1);
  const workers = await Promise.all(
    Array.from({ length: THREADS }, (_, i) => spawn(t, main.buffer, control, i + 1, { kind: 'rate', sources: SOURCES, groups: GROUPS, ops: 60_000, seed: i })),
  );
  const from = sharedClock();
  start(control);
  const reports = (await Promise.all(workers.map((w) => w.next<{ done: number[] }>()))).map((m) => m.done);
  const seconds = (sharedClock() - from) / 1000;
  // A bucket starts full (RATE) and refills at RATE a second: nothing more over the run, on whichever thread.
  const bound = Math.floor(RATE * (1 + seconds) + 1e-9);
  const totals = Array.from({ length: 8 }, (_, g) => reports.reduce((n, r) => n + (r[g] ?? 0), 0));
  t.ok(
    totals.every((n) => n <= bound),
    `at most ${bound} admitted per client over ${seconds.toFixed(3)} s (admitted: ${totals.join(' ')})`,
  );
  t.ok(totals.every((n) => n >= RATE), 'each used its burst');
  t.same(main.audit(), []);
});

t.test('a full table under contention: the workers together hold exactly maxSources clients, refuse the rest, and give every one back', async (t) => {
  const THREADS = 3;
  const S = 40;
  const main = SharedPerSourceTable.create({ maxConnections: 1_000, connectRate: 0 }, { workers: THREADS + 1, maxSources: S });
  const control = newControl(THREADS + 1);
  const pool = Array.from({ length: 120 }, (_, i) => (i % 2 === 0 ? `198.51.100.${i}` : `2001:db8:${i.toString(16)}::1`));
  const workers = await Promise.all(
    Array.from({ length: THREADS }, (_, i) => {
      const rnd = seededRandom(i + 11);
      const order = [...pool].sort(() => rnd() - 0.5);
      return spawn(t, main.buffer, control, i + 1, { kind: 'fill', sources: order });
    }),
  );
  start(control);
  const admitted = (await Promise.all(workers.map((w) => w.next<{ admitted: string[] }>()))).map((m) => m.admitted);
  const clients = new Set(admitted.flat());
  t.equal(clients.size, S, `${S} distinct clients admitted over all threads`);
  t.equal(main.size, S, 'the table is full');
  t.ok(
    admitted.every((a) => a.length < pool.length),
    `every thread was refused new clients (held ${admitted.map((a) => a.length).join(', ')} of ${pool.length})`,
  );
  t.notOk(main.admit('203.0.113.9'), 'a new client is refused');
  for (const w of workers) w.send('release');
  const released = await Promise.all(workers.map((w) => w.next<{ released: number; pending: number }>()));
  t.same(released.map((r) => r.pending), [0, 0, 0]);
  t.equal(main.size, 0, 'all given back');
  t.same(main.audit(), []);
});

t.test('a worker terminated mid-run leaves no count behind once releaseWorker has run, and a replacement counts afresh', async (t) => {
  const MAX = 3;
  const main = SharedPerSourceTable.create({ maxConnections: MAX, connectRate: 0 }, { workers: 4, maxSources: 64 });
  for (let round = 1; round <= 2; round++) {
    const control = newControl(4);
    const progress = new Int32Array(control, 4 * (1 + 3), 1);
    // The victim counts in a truth of its own: what it held when it died stops counting in the table, not in its truth.
    const truth = new SharedArrayBuffer(4 * 8);
    const hammerJob = (seed: number, ops: number, keep = false): Job => ({
      kind: 'hammer',
      sources: SOURCES,
      groups: GROUPS,
      truth: keep ? new SharedArrayBuffer(4 * 8) : truth,
      ops,
      seed,
      keep,
    });
    const survivors = await Promise.all([1, 2].map((w) => spawn(t, main.buffer, control, w, hammerJob(round * 10 + w, 150_000))));
    // Bounded too, but far longer than it is given: it is terminated halfway.
    const victim = await spawn(t, main.buffer, control, 3, hammerJob(round * 10 + 3, 50_000_000, true));
    start(control);
    const deadline = Date.now() + 30_000;
    while (Atomics.load(progress, 0) < 20_000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    t.ok(Atomics.load(progress, 0) >= 20_000, `round ${round}: the victim was running`);
    await victim.worker.terminate();
    await main.releaseWorker(3);
    const reports = (await Promise.all(survivors.map((w) => w.next<{ done: HammerReport }>()))).map((m) => m.done);
    const worst = GROUPS.map((_, g) => Math.max(...reports.map((r) => r.maxSeen[g] ?? 0)));
    t.ok(worst.every((n) => n <= MAX), `round ${round}: the survivors never saw more than ${MAX} open per client (${worst.slice(0, 8).join(' ')})`);
    t.equal(main.size, 0, `round ${round}: nothing of the dead worker counts any more`);
    t.same(main.audit(), [], `round ${round}: the table is consistent`);
    t.comment(`round ${round}: repairs so far ${main.stats.repairs} (the victim died holding the lock that often)`);
  }
  t.ok(main.admit('192.0.2.1') && main.admit('192.0.2.1') && main.admit('192.0.2.1'), 'all three slots free');
  t.notOk(main.admit('192.0.2.1'));
});

t.test('a worker that dies holding the lock halfway through an admit: no thread hangs, releaseWorker repairs, and every thread carries on', async (t) => {
  const main = SharedPerSourceTable.create({ maxConnections: 2, connectRate: 0 }, { workers: 4, maxSources: 16 });
  const control = newControl(4);
  t.ok(main.admit('192.0.2.1'));
  const dying = await spawn(t, main.buffer, control, 1, { kind: 'die-holding-lock', sources: ['192.0.2.1', '10.0.0.5'] });
  start(control);
  t.same(await dying.next(), { holding: true });
  t.notOk(main.admit('192.0.2.9'), 'the main thread gives up waiting and refuses');
  main.release('192.0.2.1');
  t.equal(main.pendingReleases, 1, 'its release waits');
  await dying.worker.terminate();
  await main.releaseWorker(1);
  t.equal(main.stats.repairs, 1, 'the lock was taken over and the table repaired');
  t.same(main.audit(), []);
  t.equal(main.size, 0, "the dead worker's connections, and the half-done one, count no more; the kept release was done");
  const truth = new SharedArrayBuffer(4 * 8);
  const control2 = newControl(4);
  const job = (seed: number): Job => ({ kind: 'hammer', sources: SOURCES, groups: GROUPS, truth, ops: 50_000, seed });
  const workers = await Promise.all([1, 2].map((w) => spawn(t, main.buffer, control2, w, job(w))));
  start(control2);
  const reports = (await Promise.all(workers.map((w) => w.next<{ done: HammerReport }>()))).map((m) => m.done);
  t.ok(reports.every((r) => r.admitted > 0 && Math.max(...r.maxSeen) <= 2), 'a replacement worker 1 and worker 2 work as before');
  t.equal(main.size, 0);
  t.same(main.audit(), []);
});
