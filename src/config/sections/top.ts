/** The top-level settings besides listeners, pools and admin: `log`, `user`, `group`. */
import { DEFAULTS } from '../../defaults.js';
import { LOG_LEVELS } from '../enums.js';
import type { Model } from '../model.js';
import { flag, object, oneWordOf, text } from '../schema-nodes.js';
import { asObject, boolOr, oneOf, type Check, type Obj } from './context.js';

/** The schema node of `log`. */
export const logSchema = object('Logging (JSON lines on stdout).', {
  level: oneWordOf(`Least severe level written: trace, debug, info, warn or error. Default: ${DEFAULTS.logLevel}.`, LOG_LEVELS, DEFAULTS.logLevel),
  access: flag('Write one JSON line per finished connection.', DEFAULTS.accessLog),
});

/** The schema node of `user`. */
export const userSchema = text(
  'Drop privileges to this user once every listener and the admin server are bound (for runs without systemd; ' +
    'under systemd use User= instead). Certificate files must stay readable by it for reloads. Default: keep the starting user.',
  64,
);

/** The schema node of `group`. */
export const groupSchema = text('With user: the group to drop to. Default: the user\'s primary group.', 64);

/** Reads `log:` with its defaults. */
export function normaliseLog(value: unknown): Model['log'] {
  const log = asObject(value) ?? {};
  return {
    level: oneOf(log.level, LOG_LEVELS, DEFAULTS.logLevel),
    access: boolOr(log.access, DEFAULTS.accessLog),
  };
}

/** Reads `user:` and `group:` (null: stay as started); a group alone is a problem. */
export function normalisePrivilegeDrop(check: Check, root: Obj): Pick<Model, 'user' | 'group'> {
  if (root.group !== undefined && root.user === undefined) check.add('group', 'needs user: privileges are dropped to a user (and this group)');
  return {
    user: typeof root.user === 'string' ? root.user : null,
    group: typeof root.group === 'string' ? root.group : null,
  };
}
