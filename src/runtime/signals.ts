/**
 * Process signals for `l4lb run`. SIGTERM/SIGINT drain then exit (after the
 * `grace`, if any); a second one during the grace starts the drain now, as
 * HAProxy's second signal does; a second one otherwise (or a third) closes
 * everything at once. SIGHUP is caught so it never kills the
 * process (Node's default): it reloads the configuration.
 *
 * Handlers go in before anything else (bin/l4lb.js calls catchSignals()
 * before it even loads the CLI), because a process that is still starting
 * gets signals too: systemd's `reload` right after `start`, a SIGTERM while
 * names resolve. Until `run` is ready to act (attachSignals()), they are
 * remembered: a SIGHUP becomes one reload once running (the file is read
 * again, so a change made during start is not lost); a SIGTERM/SIGINT becomes
 * a graceful stop as soon as start has finished; a second one during start
 * calls the `duringStart` hook (run exits at once).
 *
 * This module imports nothing at run time, so the launcher loads it in
 * about a millisecond.
 */
import type { Logger } from '../log.js';

export interface SignalActions {
  readonly logger: Logger;
  /** Graceful stop; resolves when done (the caller exits). */
  readonly stop: () => Promise<void>;
  /** A second stop signal: close everything now. */
  readonly forceStop: () => void;
  /** A second stop signal during the grace: end it (the drain starts now); false when no grace is under way. */
  readonly skipGrace?: () => boolean;
  /** SIGHUP: reload the configuration and certificates. */
  readonly reload: () => Promise<void>;
}

type StopSignal = 'SIGTERM' | 'SIGINT';

/** One per process (signals are): what arrived before `run` could act, and the actions once it can. */
interface State {
  actions: SignalActions | null;
  /** Stop signals received before attachSignals(). */
  readonly earlyStops: StopSignal[];
  /** A SIGHUP came before attachSignals(). */
  reloadPending: boolean;
  /** A second stop signal before attachSignals(): what `run` wants done (exit at once). */
  duringStart: ((signal: StopSignal) => void) | null;
  stopping: boolean;
  reloading: Promise<void> | null;
  reloadAgain: boolean;
}

let state: State | null = null;

/**
 * Catch SIGHUP, SIGTERM and SIGINT from now on. Idempotent; the first call
 * should be as early in the process as possible.
 */
export function catchSignals(): void {
  if (state !== null) return;
  const s: State = (state = { actions: null, earlyStops: [], reloadPending: false, duringStart: null, stopping: false, reloading: null, reloadAgain: false });
  process.on('SIGTERM', onStopSignal);
  process.on('SIGINT', onStopSignal);
  process.on('SIGHUP', () => {
    if (s.actions === null) s.reloadPending = true;
    else onHup(s, s.actions);
  });
}

function onStopSignal(signal: StopSignal): void {
  const s = state!;
  if (s.actions !== null) return onStop(s, s.actions, signal);
  // Still starting: the first waits for start to finish; a second cannot wait.
  s.earlyStops.push(signal);
  if (s.earlyStops.length >= 2) s.duringStart?.(signal);
}

/**
 * `run`, while starting: what a second stop signal before attachSignals()
 * does (the first one only waits for start to finish).
 */
export function onSignalDuringStart(hook: (signal: StopSignal) => void): void {
  catchSignals();
  const s = state!;
  s.duringStart = hook;
  if (s.earlyStops.length >= 2) hook(s.earlyStops[1]!);
}

/**
 * `run`, once running: signals act from now on, and what came during start
 * is done now (a stop wins over a pending reload).
 */
export function attachSignals(actions: SignalActions): void {
  catchSignals();
  const s = state!;
  if (s.actions !== null) throw new Error('attachSignals() called twice');
  s.actions = actions;
  s.duringStart = null;
  if (s.earlyStops.length > 0) {
    actions.logger.info({ signal: s.earlyStops[0] }, 'stop signal received during start');
    for (const signal of s.earlyStops.splice(0)) onStop(s, actions, signal);
    return;
  }
  if (s.reloadPending) {
    s.reloadPending = false;
    actions.logger.info({ signal: 'SIGHUP' }, 'reload signal received during start');
    onHup(s, actions);
  }
}

function onStop(s: State, actions: SignalActions, signal: StopSignal): void {
  if (s.stopping) {
    if (actions.skipGrace?.() === true) {
      actions.logger.info({ signal }, 'second stop signal during grace, draining now');
      return;
    }
    actions.logger.info({ signal }, 'second stop signal, closing everything now');
    actions.forceStop();
    return;
  }
  s.stopping = true;
  actions.logger.info({ signal }, 'stop signal, draining');
  void actions.stop();
}

/** Signals arriving during a reload queue one more reload, not one each. */
function onHup(s: State, actions: SignalActions): void {
  if (s.stopping) return;
  if (s.reloading !== null) {
    s.reloadAgain = true;
    return;
  }
  actions.logger.info({ signal: 'SIGHUP' }, 'reloading configuration');
  s.reloading = actions.reload().finally(() => {
    s.reloading = null;
    if (s.reloadAgain) {
      s.reloadAgain = false;
      onHup(s, actions);
    }
  });
}
