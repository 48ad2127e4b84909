/**
 * The state every serving thread shares, in SharedArrayBuffers: written with
 * Atomics where several threads change one value (open connections, the
 * descriptor budget), and in one row per thread where each thread only adds
 * to its own (every counter the metrics export: the main thread sums the
 * rows at scrape time). No message is on the connection path.
 *
 * Threads are numbered 0 (the main thread, which serves too) to threads-1.
 * Things are numbered by slot: servers, listeners, and listener × server
 * pairs get a slot from the main thread (see slots.ts), which keeps it for
 * as long as the thing lives, across reloads. The buffers are growable, so a
 * reload that adds servers grows them in place; views track their length.
 */

/** Per server: [active connections (all threads), flags, weight × 1000, response time average in µs (0: none yet)]. */
export const SERVER_STATE = 4;
export const S_ACTIVE = 0;
export const S_FLAGS = 1;
export const S_WEIGHT = 2;
/** least_time's moving average (see src/balance/least-time.ts), written by whichever thread measured. */
export const S_RESPONSE_US = 3;
/** Flag bits of S_FLAGS. */
export const FLAG_UP = 1;
export const FLAG_BACKUP = 2;
export const FLAG_RETIRED = 4;
/** Admin state in bits 3-4: 0 ready, 1 drain, 2 maint. */
export const ADMIN_SHIFT = 3;
export const ADMIN_MASK = 3 << ADMIN_SHIFT;

/** Per pool: [round-robin position (all threads take turns from it), spares]. */
export const POOL_STATE = 4;
export const PL_ROUND_ROBIN = 0;
export const PL_ROUND_ROBIN_BACKUP = 1;

/** Per server and thread: [connections that reached it, failed connects]. */
export const SERVER_ROW = 2;
export const R_TOTAL = 0;
export const R_CONNECT_FAILURES = 1;

/** Per listener × server pair and thread: [connections, open now, bytes in, bytes out]. */
export const PAIR_ROW = 4;
export const P_TOTAL = 0;
export const P_ACTIVE = 1;
export const P_BYTES_IN = 2;
export const P_BYTES_OUT = 3;

/** Per listener and thread: accepted, TLS failures, then terminations, rejections and local errors by index. */
export const L_ACCEPTED = 0;
export const L_TLS_FAILURES = 1;
export const L_TERMINATIONS = 2;
/** 11 terminations (termination.ts), 6 rejection reasons (stats.ts), 5 local error codes (errors.ts), with room to grow. */
export const L_REJECTIONS = L_TERMINATIONS + 16;
export const L_LOCAL_ERRORS = L_REJECTIONS + 8;
export const LISTENER_ROW = L_LOCAL_ERRORS + 8;

/** Control words: [server state generation, descriptors held, worker restarts]. */
export const C_GENERATION = 0;
export const C_FDS_HELD = 1;
export const C_WORKER_RESTARTS = 2;
const CONTROL_WORDS = 8;

/** Per listener: ticket keys. [generation (int32), spare (int32), current (48 bytes), previous (48 bytes)]. */
export const TICKET_STRIDE = 104;

/** Bytes of the PostgreSQL cancel-key table: 65,536 entries of four Int32 words (untouched pages cost nothing). */
export const CANCEL_KEY_BYTES = (1 << 16) * 4 * 4;

/** How many slots the buffers start with, and the most they may grow to. */
export interface Capacity {
  readonly servers: number;
  readonly listeners: number;
  readonly pairs: number;
  readonly pools: number;
}

/** Upper bounds for growth: far beyond any configuration (a reload asking for more is refused). */
export const MAX_CAPACITY: Capacity = { servers: 65_536, listeners: 4_096, pairs: 262_144, pools: 4_096 };

/** What another thread needs to attach: the buffers (shared, not copied, by postMessage). */
export interface SharedHandles {
  readonly threads: number;
  readonly serverState: SharedArrayBuffer;
  readonly serverShare: SharedArrayBuffer;
  readonly serverRows: SharedArrayBuffer;
  readonly pairRows: SharedArrayBuffer;
  readonly listenerRows: SharedArrayBuffer;
  readonly listenerActive: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
  readonly tickets: SharedArrayBuffer;
  readonly poolState: SharedArrayBuffer;
  /** PostgreSQL cancel keys of live sessions (src/protocols/postgres/cancel-keys.ts); fixed size. */
  readonly cancelKeys: SharedArrayBuffer;
}

function growable(bytes: number, maxBytes: number): SharedArrayBuffer {
  return new SharedArrayBuffer(bytes, { maxByteLength: Math.max(bytes, maxBytes) });
}

export class SharedMemory {
  readonly threads: number;
  /** This thread's row. */
  readonly thread: number;
  readonly #handles: SharedHandles;
  readonly serverState: Int32Array;
  /** Per server and thread: that thread's part of S_ACTIVE (so a dead thread's part can be taken back). */
  readonly serverShare: Int32Array;
  readonly serverRows: Float64Array;
  readonly pairRows: Float64Array;
  readonly listenerRows: Float64Array;
  /** Per listener: [open connections of all threads, then each thread's part]. */
  readonly listenerActive: Int32Array;
  readonly control: Int32Array;
  readonly tickets: SharedArrayBuffer;
  readonly poolState: Int32Array;

  private constructor(handles: SharedHandles, thread: number) {
    this.#handles = handles;
    this.threads = handles.threads;
    this.thread = thread;
    // No length: the views track the buffers as they grow.
    this.serverState = new Int32Array(handles.serverState);
    this.serverShare = new Int32Array(handles.serverShare);
    this.serverRows = new Float64Array(handles.serverRows);
    this.pairRows = new Float64Array(handles.pairRows);
    this.listenerRows = new Float64Array(handles.listenerRows);
    this.listenerActive = new Int32Array(handles.listenerActive);
    this.control = new Int32Array(handles.control);
    this.tickets = handles.tickets;
    this.poolState = new Int32Array(handles.poolState);
  }

  /** The main thread's memory for `threads` serving threads (itself included), sized for `capacity`. */
  static create(threads: number, capacity: Capacity): SharedMemory {
    const t = threads;
    const m = MAX_CAPACITY;
    const handles: SharedHandles = {
      threads: t,
      serverState: growable(capacity.servers * SERVER_STATE * 4, m.servers * SERVER_STATE * 4),
      serverShare: growable(capacity.servers * t * 4, m.servers * t * 4),
      serverRows: growable(capacity.servers * t * SERVER_ROW * 8, m.servers * t * SERVER_ROW * 8),
      pairRows: growable(capacity.pairs * t * PAIR_ROW * 8, m.pairs * t * PAIR_ROW * 8),
      listenerRows: growable(capacity.listeners * t * LISTENER_ROW * 8, m.listeners * t * LISTENER_ROW * 8),
      listenerActive: growable(capacity.listeners * (t + 1) * 4, m.listeners * (t + 1) * 4),
      control: new SharedArrayBuffer(CONTROL_WORDS * 4),
      tickets: growable(capacity.listeners * TICKET_STRIDE, m.listeners * TICKET_STRIDE),
      poolState: growable(capacity.pools * POOL_STATE * 4, m.pools * POOL_STATE * 4),
      cancelKeys: new SharedArrayBuffer(CANCEL_KEY_BYTES),
    };
    return new SharedMemory(handles, 0);
  }

  /** Another thread's view of the same memory, writing its own rows as `thread`. */
  static attach(handles: SharedHandles, thread: number): SharedMemory {
    return new SharedMemory(handles, thread);
  }

  handles(): SharedHandles {
    return this.#handles;
  }

  /** Slots the buffers hold now. */
  get capacity(): Capacity {
    return {
      servers: this.serverState.length / SERVER_STATE,
      listeners: this.listenerActive.length / (this.threads + 1),
      pairs: this.pairRows.length / (this.threads * PAIR_ROW),
      pools: this.poolState.length / POOL_STATE,
    };
  }

  /**
   * Grow the buffers to hold at least `need` slots (main thread, before the
   * slots are handed out). Throws RangeError beyond MAX_CAPACITY.
   */
  ensure(need: Capacity): void {
    const have = this.capacity;
    const t = this.threads;
    const grow = (sab: SharedArrayBuffer, bytes: number): void => {
      if (bytes > sab.byteLength) sab.grow(bytes);
    };
    for (const k of ['servers', 'listeners', 'pairs', 'pools'] as const) {
      if (need[k] > MAX_CAPACITY[k]) throw new RangeError(`more ${k} than l4lb holds (${need[k]} > ${MAX_CAPACITY[k]})`);
    }
    // Double when growing, so many small reloads do not grow one slot at a time.
    const size = (n: number, had: number): number => (n <= had ? had : Math.max(n, had * 2));
    const servers = Math.min(MAX_CAPACITY.servers, size(need.servers, have.servers));
    const listeners = Math.min(MAX_CAPACITY.listeners, size(need.listeners, have.listeners));
    const pairs = Math.min(MAX_CAPACITY.pairs, size(need.pairs, have.pairs));
    const pools = Math.min(MAX_CAPACITY.pools, size(need.pools, have.pools));
    const h = this.#handles;
    grow(h.serverState, servers * SERVER_STATE * 4);
    grow(h.serverShare, servers * t * 4);
    grow(h.serverRows, servers * t * SERVER_ROW * 8);
    grow(h.pairRows, pairs * t * PAIR_ROW * 8);
    grow(h.listenerRows, listeners * t * LISTENER_ROW * 8);
    grow(h.listenerActive, listeners * (t + 1) * 4);
    grow(h.tickets, listeners * TICKET_STRIDE);
    grow(h.poolState, pools * POOL_STATE * 4);
  }

  /** Sum of one field over every thread's row: `base` is the row of thread 0, `stride` the distance between threads. */
  sumRows(rows: Float64Array, base: number, stride: number): number {
    let n = 0;
    for (let t = 0; t < this.threads; t++) n += rows[base + t * stride]!;
    return n;
  }

  /**
   * A serving thread is gone (it died and is being replaced): take its part
   * of every open-connection count back, so nothing it held counts any more.
   */
  releaseThread(thread: number): void {
    const t = this.threads;
    const servers = this.serverState.length / SERVER_STATE;
    for (let s = 0; s < servers; s++) {
      const i = s * t + thread;
      const share = this.serverShare[i]!;
      if (share !== 0) {
        Atomics.sub(this.serverState, s * SERVER_STATE + S_ACTIVE, share);
        this.serverShare[i] = 0;
      }
    }
    const listeners = this.listenerActive.length / (t + 1);
    for (let l = 0; l < listeners; l++) {
      const i = l * (t + 1) + 1 + thread;
      const share = this.listenerActive[i]!;
      if (share !== 0) {
        Atomics.sub(this.listenerActive, l * (t + 1), share);
        this.listenerActive[i] = 0;
      }
    }
    const pairs = this.pairRows.length / (t * PAIR_ROW);
    for (let p = 0; p < pairs; p++) this.pairRows[(p * t + thread) * PAIR_ROW + P_ACTIVE] = 0;
  }

  /** Zero a slot's state and rows before it is handed out again. */
  clearServer(slot: number): void {
    const t = this.threads;
    this.serverState.fill(0, slot * SERVER_STATE, (slot + 1) * SERVER_STATE);
    this.serverShare.fill(0, slot * t, (slot + 1) * t);
    this.serverRows.fill(0, slot * t * SERVER_ROW, (slot + 1) * t * SERVER_ROW);
  }

  clearPair(slot: number): void {
    const t = this.threads;
    this.pairRows.fill(0, slot * t * PAIR_ROW, (slot + 1) * t * PAIR_ROW);
  }

  clearListener(slot: number): void {
    const t = this.threads;
    this.listenerRows.fill(0, slot * t * LISTENER_ROW, (slot + 1) * t * LISTENER_ROW);
    this.listenerActive.fill(0, slot * (t + 1), (slot + 1) * (t + 1));
    new Uint8Array(this.tickets).fill(0, slot * TICKET_STRIDE, (slot + 1) * TICKET_STRIDE);
  }
}
