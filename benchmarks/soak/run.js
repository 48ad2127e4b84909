#!/usr/bin/env node
// npm run soak [-- --duration 60] [--concurrency 48] [--seed N] [--json]
// The chaos soak (lib/soak.js): prints the figures, and every finding; exits
// 1 when anything was lost, corrupted, duplicated, unexplained or leaked.
import { parseArgs } from 'node:util';
import { killAll } from '../lib/children.js';
import { runSoak } from './lib/soak.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '48' },
    seed: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
process.on('exit', killAll);
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(signal, () => {
    killAll();
    process.exit(code);
  });
}
const log = (line) => process.stderr.write(`soak: ${line}\n`);
const result = await runSoak({
  durationS: Number(values.duration),
  concurrency: Number(values.concurrency),
  seed: values.seed !== undefined ? Number(values.seed) : undefined,
  log,
});
if (values.json) console.log(JSON.stringify(result));
else {
  const { findings, ...figures } = result;
  console.log(JSON.stringify(figures, null, 2));
  for (const f of findings) console.log(`finding: ${JSON.stringify(f)}`);
  console.log(
    `${result.gb_moved} GB in ${result.streams} streams (${result.ok} ok), ${result.reloads} reloads, ${result.kills} kills, ${result.blackholes} black holes, ${result.garbage_clients} garbage clients; failures by cause ${JSON.stringify(result.failed_by_cause)}; ${result.pass ? 'PASS' : 'FAIL'}`,
  );
}
process.exit(result.pass ? 0 : 1);
