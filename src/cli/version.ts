/** l4lb's version, from package.json (two levels up from dist/cli/ as from src/cli/). */
import { readFileSync } from 'node:fs';

export const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
