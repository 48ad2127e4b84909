// Load a test helper (test/helpers/*.ts) from a benchmark, so the benchmark
// runs the same code as the tests instead of a second copy of it.
//
// Node 24 runs a .ts file as it is when its TypeScript is erasable (type
// stripping, no flag). What it does not do is TypeScript's module
// resolution: the helpers import each other as './peers.js' (the NodeNext
// spelling, what tsc emits), and there is no peers.js on disk, only
// peers.ts. The resolve hook below maps a relative './x.js' imported from a
// .ts file to './x.ts' when x.js does not exist and x.ts does; nothing else
// is touched. It is registered once, on first use, in this process only.
import { existsSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';

let registered = false;

function register() {
  if (registered) return;
  registered = true;
  if (typeof module.registerHooks !== 'function') {
    throw new Error(`Node.js ${process.version} has no module.registerHooks: run with the Node.js the project brings (npm run ..., or node_modules/.bin/node)`);
  }
  module.registerHooks({
    resolve(specifier, context, nextResolve) {
      const parent = context.parentURL;
      if (parent?.startsWith('file:') && parent.endsWith('.ts') && /^\.\.?\//.test(specifier) && specifier.endsWith('.js')) {
        const js = new URL(specifier, parent);
        const ts = new URL(specifier.replace(/\.js$/, '.ts'), parent);
        if (!existsSync(fileURLToPath(js)) && existsSync(fileURLToPath(ts))) return nextResolve(ts.href, context);
      }
      return nextResolve(specifier, context);
    },
  });
}

/** `import()` of test/helpers/NAME.ts. */
export async function importTestHelper(name) {
  if (!process.features?.typescript) {
    throw new Error(
      `Node.js ${process.version} cannot run TypeScript (type stripping): run with the Node.js the project brings (npm run ..., or node_modules/.bin/node)`,
    );
  }
  register();
  return import(new URL(`../../test/helpers/${name}.ts`, import.meta.url).href);
}
