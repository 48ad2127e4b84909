/**
 * Where a JSON configuration stops being JSON: the scan behind the line and
 * column of a JSON read error (config/json-position.ts), checked against
 * hand-placed errors and, on mutated documents, against JSON.parse itself.
 */
import t from 'tap';
import { jsonErrorOffset, positionOf } from '../src/config/json-position.js';
import { seedFrom, seededRandom } from './helpers/random.js';

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

t.test('valid JSON has no error offset', async (t) => {
  for (const text of ['{}', '[]', ' 0 ', '-1.5e+3', '"a\\u00e9\\n"', 'true', 'null', '{"a": [1, {"b": false}], "c": ""}\n']) {
    t.equal(jsonErrorOffset(text), -1, text);
  }
});

t.test('the offset is the first character that cannot belong to JSON', async (t) => {
  const cases: [string, number][] = [
    ['{\n  "log": {},\n}\n', 15], // trailing comma: the closing brace where a key must be
    ['{"a" 1}', 5], // no colon
    ['{a: 1}', 1], // unquoted key
    ['[1, 2', 5], // ends early
    ['[1 2]', 3], // no comma
    ['01', 1], // leading zero
    ['1.', 1], // no digit after the point
    ['-x', 1],
    ["'a'", 0], // single quotes
    ['"a\\x"', 3], // unknown escape
    ['"a\nb"', 2], // raw newline inside a string
    ['{} {}', 3], // a second top-level value
    ['', 0],
    ['tru', 0],
  ];
  for (const [text, offset] of cases) t.equal(jsonErrorOffset(text), offset, JSON.stringify(text));
});

t.test('an offset reads as the line and column an editor shows', async (t) => {
  t.same(positionOf('{\n  "log": {},\n}\n', 15), { line: 3, column: 1 });
  t.same(positionOf('abc', 0), { line: 1, column: 1 });
  t.same(positionOf('a\nbc', 3), { line: 2, column: 2 });
});

t.test('deeply nested input is scanned without overflowing the stack', async (t) => {
  const depth = 1_000_000;
  t.equal(jsonErrorOffset('['.repeat(depth)), depth, 'ends early, at its end');
  t.equal(jsonErrorOffset(`${'['.repeat(depth)}${']'.repeat(depth)}`), -1);
});

t.test('on mutated documents the scan and JSON.parse agree on what is JSON', async (t) => {
  const random = seededRandom(seedFrom(t, 'JSON_POSITION_SEED', 'mutation'));
  const doc = JSON.stringify(
    { listeners: [{ name: 'pg', bind: '127.0.0.1:5432', pool: 'pg', per_source: { max_connections: 10 } }], pools: [{ name: 'pg', retries: -1.5e3, servers: [{ address: 'a:1', backup: true }] }], log: null },
    null,
    2,
  );
  const alphabet = '{}[]:,"\\ \n0123456789.-+eEtrufalsn/xu';
  let invalid = 0;
  for (let i = 0; i < 5_000; i++) {
    let text = doc;
    for (let m = 1 + Math.floor(random() * 3); m > 0; m--) {
      const at = Math.floor(random() * (text.length + 1));
      const c = alphabet[Math.floor(random() * alphabet.length)]!;
      const op = random();
      text = op < 0.4 ? text.slice(0, at) + c + text.slice(at) : op < 0.7 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + c + text.slice(at + 1);
    }
    const offset = jsonErrorOffset(text);
    if (parses(text) !== (offset === -1)) {
      t.fail(`disagreement on ${JSON.stringify(text)}: offset ${offset}`);
      return;
    }
    if (offset >= 0) invalid++;
    if (offset > text.length) t.fail(`offset ${offset} past the end of ${JSON.stringify(text)}`);
  }
  t.ok(invalid > 1_000, `most mutations are invalid JSON (${invalid} of 5000)`);
});
