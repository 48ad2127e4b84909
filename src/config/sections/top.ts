/** The top-level settings besides listeners, pools and admin: `log`, `workers`, `user`, `group`. */
import { availableParallelism } from 'node:os';
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

/** Most worker threads: far more than any machine's cores that l4lb would use well. */
export const MAX_WORKERS = 256;

/** The schema node of `workers`. */
export const workersSchema = {
  description:
    `Threads that serve traffic, each accepting on every listener (the kernel spreads new connections): a number from 1 to ${MAX_WORKERS}, ` +
    'or "auto" for the available cores (HAProxy nbthread, NGINX worker_processes). Default: auto.',
  type: ['integer', 'string'],
  minimum: 1,
  maximum: MAX_WORKERS,
  pattern: '^auto$',
  default: 'auto',
};

/** Reads `workers:`; `auto` (the default) is the cores this process may use. */
export function normaliseWorkers(value: unknown): number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= MAX_WORKERS ? value : Math.min(MAX_WORKERS, availableParallelism());
}

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
