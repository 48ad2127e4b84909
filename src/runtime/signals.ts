/**
 * Process signals for `l4lb run`. SIGTERM/SIGINT drain then exit; a second
 * one closes open connections at once. SIGHUP is caught so it never kills
 * the process (Node's default): it reloads the configuration.
 */
import type { Logger } from '../log.js';

export interface SignalActions {
  readonly logger: Logger;
  /** Graceful stop; resolves when done (the caller exits). */
  readonly stop: () => Promise<void>;
  /** A second stop signal: close everything now. */
  readonly forceStop: () => void;
  /** SIGHUP: reload the configuration and certificates. */
  readonly reload: () => Promise<void>;
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
  // Signals arriving during a reload queue one more reload, not one each.
  let reloading: Promise<void> | null = null;
  let again = false;
  const onHup = (): void => {
    if (stopping) return;
    if (reloading !== null) {
      again = true;
      return;
    }
    actions.logger.info({ signal: 'SIGHUP' }, 'reloading configuration');
    reloading = actions.reload().finally(() => {
      reloading = null;
      if (again) {
        again = false;
        onHup();
      }
    });
  };
  process.on('SIGHUP', onHup);
}
