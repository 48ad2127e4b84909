/**
 * Bounded fuzz of the PROXY header parser: at least 100,000 random, valid and
 * mutated headers, each checked against an independent reference validator
 * (scripts/fuzz-proxy-protocol.js, shared with the long-run script).
 *
 * Reproduce a failure with FUZZ_SEED=<printed seed>; FUZZ_ITERATIONS raises
 * the count. The long run: `npx tsc && node scripts/fuzz-proxy-protocol.js 5000000 <seed>`.
 */
import t from 'tap';
import { ProxyHeaderError, ProxyHeaderParser } from '../src/proxy-protocol/index.js';
// @ts-ignore -- plain JS harness without type declarations
import { runFuzz, referenceParse, crc32cBitwise } from '../scripts/fuzz-proxy-protocol.js';

const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const iterations = Math.max(100_000, Number(process.env.FUZZ_ITERATIONS ?? 100_000));

t.test('the reference validator gets known cases right (guards the guard)', async (t) => {
  t.equal(crc32cBitwise(Buffer.from('123456789')), 0xe3069283, 'CRC32C check value');
  t.equal(referenceParse(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nx')).kind, 'valid');
  t.equal(referenceParse(Buffer.from('PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n')).kind, 'invalid');
  t.equal(referenceParse(Buffer.from('PROXY TCP6 ::1 ::2 1 65536\r\n')).kind, 'invalid');
  t.equal(referenceParse(Buffer.from('PROXY UNKNOWN\r\n')).kind, 'valid');
  t.equal(referenceParse(Buffer.from('PROXY TCP4 1.2.3.4')).kind, 'incomplete');
  t.equal(referenceParse(Buffer.from('GET / HTTP/1.1\r\n')).kind, 'invalid');
});

t.test(`the parser agrees with the reference validator on ${iterations} fuzzed cases (seed ${seed})`, async (t) => {
  t.comment(`FUZZ_SEED=${seed}`);
  const r = runFuzz({ ProxyHeaderParser, ProxyHeaderError }, { iterations, seed });
  const rate = Math.round((r.iterations / r.elapsedMs) * 1000);
  t.comment(`${r.iterations} cases in ${(r.elapsedMs / 1000).toFixed(2)} s (${rate} cases/s); reference verdicts ${JSON.stringify(r.counts)}`);
  for (const f of r.failures.slice(0, 5)) t.comment(JSON.stringify(f, null, 2));
  t.equal(r.failures.length, 0, `no failures (reproduce with FUZZ_SEED=${seed})`);
  // The mix must actually exercise all three verdicts, or the fuzzer has decayed.
  t.ok(r.counts.valid > iterations / 5, 'enough valid headers');
  t.ok(r.counts.invalid > iterations / 5, 'enough invalid headers');
  t.ok(r.counts.incomplete > 0, 'some incomplete headers');
});
