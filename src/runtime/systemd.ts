/**
 * systemd integration without a native addon: readiness and status through
 * `systemd-notify` (the unit sets NotifyAccess=all), and socket activation
 * through LISTEN_FDS / LISTEN_FDNAMES. Outside systemd every call is a no-op.
 */
import { execFile } from 'node:child_process';

/** systemd passes activated sockets starting at this descriptor. */
const SD_LISTEN_FDS_START = 3;
/** A notification that takes longer than this is abandoned; systemd may not be listening. */
const NOTIFY_TIMEOUT_MS = 5_000;

/** Whether systemd asked for notifications (Type=notify). */
export function notifyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return typeof env.NOTIFY_SOCKET === 'string' && env.NOTIFY_SOCKET.length > 0;
}

/**
 * Send `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=...` and the like.
 * Resolves when systemd-notify has delivered it (or failed; failures never
 * affect serving, they are reported through `onError`).
 */
export function sdNotify(fields: Record<string, string>, onError?: (err: Error) => void): Promise<void> {
  if (!notifyEnabled()) return Promise.resolve();
  // --pid names us as the sender, so systemd attributes the message to the
  // main process even though systemd-notify is a short-lived child.
  const args = [`--pid=${process.pid}`, ...Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)];
  return new Promise((resolve) => {
    execFile('systemd-notify', args, { timeout: NOTIFY_TIMEOUT_MS }, (err) => {
      if (err) onError?.(err);
      resolve();
    });
  });
}

/**
 * Sockets handed over by systemd socket activation, by name
 * (FileDescriptorName= in the .socket unit; unnamed ones are "unknown").
 * Only when LISTEN_PID is this process, as sd_listen_fds(3) requires.
 */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): Map<string, number> {
  const fds = new Map<string, number>();
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return fds;
  const count = Number(env.LISTEN_FDS);
  if (!Number.isInteger(count) || count <= 0) return fds;
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  for (let i = 0; i < count; i++) {
    const name = names[i] || 'unknown';
    if (!fds.has(name)) fds.set(name, SD_LISTEN_FDS_START + i);
  }
  return fds;
}
