/**
 * Process signals for `l4lb run`. SIGTERM/SIGINT drain then exit; a second
 * one closes open connections at once. SIGHUP is caught so it never kills
 * the process (Node's default); configuration reload arrives with the
 * operations work.
 */
import type { Logger } from '../log.js';

export interface SignalActions {
  readonly logger: Logger;
  /** Graceful stop; resolves when done (the caller exits). */
  readonly stop: () => Promise<void>;
  /** A second stop signal: close everything now. */
  readonly forceStop: () => void;
}

export function installSignals(actions: SignalActions): void {
  let stopping = false;
  const onStop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      actions.logger.info({ signal }, 'second stop signal, closing open connections');
      actions.forceStop();
      return;
    }
    stopping = true;
    actions.logger.info({ signal }, 'stop signal, draining');
    void actions.stop();
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', () => {
    actions.logger.warn('SIGHUP: configuration reload is not supported yet; running configuration unchanged');
  });
}
