/**
 * Where a JSON text stops being JSON, as a line and column: what editors
 * jump to. JSON.parse says only "at position N" on Node 20 (newer V8 adds
 * the line and column itself), and its wording is no interface to parse,
 * so the position is found again here by a small scan of the grammar
 * (RFC 8259), run only after JSON.parse has failed.
 */

const WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const ESCAPE = /\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/y;

/** A place in a text: 1-based line, and column in UTF-16 code units (as editors count them). */
export interface TextPosition {
  readonly line: number;
  readonly column: number;
}

/**
 * The offset of the first character that makes `text` invalid JSON (the
 * text's length when it ends too early), or -1 when it is valid.
 * Iterative, so deeply nested input cannot overflow the stack.
 */
export function jsonErrorOffset(text: string): number {
  /** The closing bracket of each open container, innermost last. */
  const open: string[] = [];
  /** What may come next: a value, a key, the colon after a key, or (after a value) a comma or the closing bracket. */
  let want: 'value' | 'value-or-close' | 'key' | 'key-or-close' | 'colon' | 'after-value' = 'value';
  let i = 0;
  for (;;) {
    while (i < text.length && WHITESPACE.has(text[i]!)) i++;
    if (i >= text.length) return want === 'after-value' && open.length === 0 ? -1 : i;
    const c = text[i]!;
    const close = open.at(-1);
    if (want === 'after-value') {
      if (close === undefined) return i; // text after the one top-level value
      if (c === ',') want = close === '}' ? 'key' : 'value';
      else if (c === close) open.pop();
      else return i;
      i++;
    } else if (want === 'colon') {
      if (c !== ':') return i;
      want = 'value';
      i++;
    } else if ((want === 'key-or-close' && c === '}') || (want === 'value-or-close' && c === ']')) {
      open.pop();
      want = 'after-value';
      i++;
    } else if (want === 'key' || want === 'key-or-close') {
      if (c !== '"') return i;
      const end = stringEnd(text, i);
      if (typeof end !== 'number') return end.error;
      i = end;
      want = 'colon';
    } else if (c === '{' || c === '[') {
      open.push(c === '{' ? '}' : ']');
      want = c === '{' ? 'key-or-close' : 'value-or-close';
      i++;
    } else {
      const end = scalarEnd(text, i);
      if (typeof end !== 'number') return end.error;
      i = end;
      want = 'after-value';
    }
  }
}

/** The line and column of `offset` in `text`. */
export function positionOf(text: string, offset: number): TextPosition {
  const before = text.slice(0, offset).split('\n');
  return { line: before.length, column: (before.at(-1)?.length ?? 0) + 1 };
}

/** Where a scanned value ends, or the offset of the character that makes it invalid. */
type Scan = number | { readonly error: number };

/** The end of the string, number or literal at `i`. */
function scalarEnd(text: string, i: number): Scan {
  const c = text[i]!;
  if (c === '"') return stringEnd(text, i);
  for (const word of ['true', 'false', 'null']) if (text.startsWith(word, i)) return i + word.length;
  NUMBER.lastIndex = i;
  if (!NUMBER.test(text)) return { error: c === '-' ? i + 1 : i };
  const end = NUMBER.lastIndex;
  // `01`, `1.`, `1e`: the text goes on as if the number did.
  return /[0-9.eE+-]/.test(text[end] ?? '') ? { error: end } : end;
}

/** The end of the string opening at `i`. */
function stringEnd(text: string, i: number): Scan {
  let j = i + 1;
  while (j < text.length) {
    const c = text.charCodeAt(j);
    if (c === 0x22) return j + 1; // "
    if (c < 0x20) return { error: j }; // control characters must be escaped
    if (c === 0x5c) {
      ESCAPE.lastIndex = j;
      if (!ESCAPE.test(text)) return { error: j + 1 };
      j = ESCAPE.lastIndex;
    } else {
      j++;
    }
  }
  return { error: text.length };
}
