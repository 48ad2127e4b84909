#!/usr/bin/env node
// Writes conf/l4lb.schema.json from the compiled schema (run `npm run build` first),
// so editors check configuration files with exactly the rules l4lb applies.
// `--check` only compares, and exits 1 when the file is stale (for CI).
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const root = new URL('..', import.meta.url);
const target = new URL('conf/l4lb.schema.json', root);

let configSchema;
try {
  ({ configSchema } = await import(new URL('dist/config/schema.js', root).href));
} catch (err) {
  console.error(`export-schema: cannot load dist/config/schema.js (${err.message}); run "npm run build" first`);
  process.exit(1);
}
if (!configSchema.$schema || !configSchema.title) {
  console.error('export-schema: the schema lacks $schema or title');
  process.exit(1);
}

const text = `${JSON.stringify(configSchema, null, 2)}\n`;
const path = fileURLToPath(target);
if (process.argv.includes('--check')) {
  const current = await readFile(target, 'utf8').catch(() => '');
  if (current !== text) {
    console.error(`export-schema: ${path} is out of date; run "npm run build && npm run schema"`);
    process.exit(1);
  }
  console.log(`${path} is up to date`);
} else {
  await writeFile(target, text);
  console.log(`wrote ${path}`);
}
