/**
 * Dropping root after binding, for runs without systemd (`user:`/`group:`).
 * Supplementary groups go first (initgroups), then the group, then the user:
 * once the uid changes, the process can no longer change its groups.
 */
import { readFileSync } from 'node:fs';
import { L4lbError } from '../errors.js';

/** Node has process.initgroups on POSIX; @types/node 20 leaves it out. */
const proc = process as NodeJS.Process & { initgroups?: (user: string | number, extraGroup: string | number) => void };

export class PrivilegeDropError extends L4lbError {
  constructor(message: string, cause?: unknown) {
    super('L4LB_PRIVILEGE_DROP', message, { cause });
  }
}

export interface Dropped {
  readonly uid: number;
  readonly gid: number;
}

/**
 * Become `user` (and `group`, else the user's primary group). Throws
 * PrivilegeDropError if that is impossible, so l4lb never keeps running as
 * root by mistake.
 */
export function dropPrivileges(user: string, group: string | null): Dropped {
  if (process.setuid === undefined || process.setgid === undefined || proc.initgroups === undefined) {
    throw new PrivilegeDropError('dropping privileges is not supported on this platform');
  }
  const gid = group ?? primaryGroup(user);
  if (gid === undefined) {
    throw new PrivilegeDropError(`cannot find the primary group of user "${user}" in /etc/passwd: set group: explicitly`);
  }
  try {
    if (process.getuid?.() === 0) proc.initgroups(user, gid);
    process.setgid(gid);
    process.setuid(user);
  } catch (err) {
    throw new PrivilegeDropError(`cannot become user "${user}" and group "${gid}": ${(err as Error).message}`, err);
  }
  return { uid: process.getuid!(), gid: process.getgid!() };
}

/** The primary gid of `user` from /etc/passwd (name or numeric uid). */
function primaryGroup(user: string): number | undefined {
  let passwd: string;
  try {
    passwd = readFileSync('/etc/passwd', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f.length >= 4 && (f[0] === user || f[2] === user)) return Number(f[3]);
  }
  return undefined;
}
