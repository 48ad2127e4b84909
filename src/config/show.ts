/** Short, readable renderings of configuration values for error messages. */

const MAX_SHOWN = 60;

/**
 * Renders a value as the user would recognise it: strings quoted (and cut
 * short, so a megabyte of junk stays a one-line message), containers by kind.
 */
export function show(value: unknown): string {
  if (typeof value === 'string') {
    const cut = value.length > MAX_SHOWN ? `${value.slice(0, MAX_SHOWN)}…` : value;
    return JSON.stringify(cut);
  }
  if (value === null) return 'null';
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'function') return 'a function';
  return String(value);
}
