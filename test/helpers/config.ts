/** Configurations for tests that expect them refused. */
import { buildModel } from '../../src/config/load.js';
import { ConfigError, type ConfigProblem } from '../../src/errors.js';

/** The problems buildModel reports for `raw`; throws when it succeeds or throws anything but a ConfigError. */
export async function problemsOf(raw: unknown): Promise<ConfigProblem[]> {
  try {
    await buildModel(raw);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected a ConfigError');
}
