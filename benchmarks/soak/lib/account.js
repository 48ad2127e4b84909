// The soak's accounting: every stream is joined with what its backend
// reported and with l4lb's access line for it (same listener and client
// port, the closest start), then sorted into ok, failed for a cause the
// harness made, or a finding.
const CLEAN = new Set(['client_close', 'server_close']);

export function account({ streams, reports, access, events, lb, durationS, seed, concurrency }) {
  const accepts = new Map();
  const ups = new Map();
  const resets = new Set();
  for (const r of reports) {
    if (r.t === 'accept') accepts.set(r.id, [...(accepts.get(r.id) ?? []), r]);
    else if (r.t === 'up') ups.set(r.id, r);
    else if (r.t === 'reset') resets.add(r.id);
  }
  const byClient = new Map();
  for (const a of access) {
    const key = `${a.listener} ${a.client}`;
    byClient.set(key, [...(byClient.get(key) ?? []), a]);
  }
  const used = new Set();
  const lineOf = (s) => {
    if (s.localPort === undefined) return null;
    let best = null;
    for (const a of byClient.get(`${s.listener} 127.0.0.1:${s.localPort}`) ?? []) {
      if (used.has(a)) continue;
      const d = Math.abs(a.start - s.start);
      if (d < 3000 && (best === null || d < Math.abs(best.start - s.start))) best = a;
    }
    if (best !== null) used.add(best);
    return best;
  };

  const t0 = streams[0]?.start ?? 0;
  const findings = [];
  const finding = (kind, s, line, extra = {}) =>
    findings.push({
      kind,
      stream: s.id,
      listener: s.listener,
      client_port: s.localPort ?? null,
      up: s.up,
      down: s.down,
      sent_up: s.sentUp,
      got_down: s.gotDown,
      order: s.order,
      mode: s.mode,
      outcome: s.outcome,
      backend_up: ups.get(s.id) ?? null,
      accepted_by: (accepts.get(s.id) ?? []).map((r) => r.backend),
      access: line,
      start: s.start,
      end: s.end,
      ...extra,
    });
  const failures = {};
  const failureTerminations = {};
  let ok = 0;
  let bytes = 0;
  for (const s of streams) {
    bytes += (s.sentUp ?? 0) + (s.gotDown ?? 0);
    const line = lineOf(s);
    const acc = accepts.get(s.id) ?? [];
    const up = ups.get(s.id);
    const server = line?.server ?? acc[0]?.backend ?? null;
    if (acc.length > 1) finding('duplicated_stream', s, line);
    if (s.outcome === 'corrupt' || s.outcome === 'long') finding(s.outcome === 'long' ? 'duplicated_bytes_down' : 'corrupted_down', s, line);
    if (up?.verdict === 'corrupt' || up?.verdict === 'long') finding(up.verdict === 'long' ? 'duplicated_bytes_up' : 'corrupted_up', s, line);
    if (line !== null && (line.termination === 'connect_failed' || line.termination === 'no_server')) finding('failed_new_connection', s, line);

    const good = s.outcome === 'ok' && up?.verdict === 'ok' && acc.length === 1;
    if (good) {
      ok++;
      if (line === null) finding('ok_stream_not_logged', s, line);
      else if (!CLEAN.has(line.termination)) finding('ok_stream_logged_as_failed', s, line);
      else if (s.listener !== 'pass' && (line.bytes_in !== 32 + s.up || line.bytes_out !== s.down)) finding('access_bytes_mismatch', s, line);
      continue;
    }
    const cause = causeOf(s, server, events, acc, up, resets);
    const key = cause ?? 'unexplained';
    failures[key] = (failures[key] ?? 0) + 1;
    const terms = (failureTerminations[key] ??= {});
    const t = line?.termination ?? 'no_line';
    terms[t] = (terms[t] ?? 0) + 1;
    if (cause === null) finding(`unexplained_failure:${s.outcome}${s.outcome === 'ok' ? `/up=${up?.verdict ?? 'none'}` : ''}`, s, line);
    else if (line === null) finding('failure_not_logged', s, line, { cause });
  }

  const lbFindings = [];
  if (lb.exit !== null) lbFindings.push(`l4lb exited during the run: ${JSON.stringify(lb.exit)}`);
  if (lb.restarts !== 0) lbFindings.push(`l4lb_worker_restarts_total is ${lb.restarts}`);
  if (lb.after.fds !== null && lb.after.fds > lb.baseline.fds + 5) lbFindings.push(`fds ${lb.baseline.fds} -> ${lb.after.fds} after the run`);
  if (lb.after.rssKb !== null && lb.after.rssKb > lb.baseline.rssKb * 2 + 64 * 1024)
    lbFindings.push(`RSS ${(lb.baseline.rssKb / 1024).toFixed(0)} MB -> ${(lb.after.rssKb / 1024).toFixed(0)} MB after the run`);
  if (lb.reloadFailedLines > 0) lbFindings.push(`${lb.reloadFailedLines} reloads failed`);

  const byKind = {};
  for (const f of findings) byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
  return {
    seed,
    duration_s: durationS,
    concurrency,
    gb_moved: Number((bytes / 1e9).toFixed(3)),
    streams: streams.length,
    ok,
    failed_by_cause: failures,
    failed_terminations: failureTerminations,
    reloads: events.reloads,
    reloads_logged: lb.reloadedLines,
    cert_swaps: events.certSwaps,
    kills: events.kills.length,
    kill_log: events.kills.map((k) => `${k.backend}@${((k.at - t0) / 1000).toFixed(1)}s`),
    blackholes: events.blackholes.length,
    garbage_clients: events.garbage,
    access_lines: access.length,
    l4lb: { pid: lb.pid, exit: lb.exit, worker_restarts: lb.restarts, baseline: lb.baseline, after: lb.after, errors: lb.errors },
    findings_by_kind: byKind,
    findings: findings.slice(0, 30),
    l4lb_findings: lbFindings,
    pass: findings.length === 0 && lbFindings.length === 0,
  };
}

/** The fault the harness made that explains a failed stream, or null. */
function causeOf(s, server, events, acc, up, resets) {
  // The process that accepted the stream was killed after it started (the
  // client may have finished while its last bytes were still on their way),
  // or the server l4lb named was killed while the stream was open.
  const pids = new Set(acc.map((r) => r.pid));
  const kill = events.kills.find(
    (k) => k.at >= s.start - 500 && (pids.has(k.pid) || (k.backend === server && k.at <= s.end + 500)),
  );
  if (kill) return 'backend_killed';
  const hole = events.blackholes.find((h) => h.backend === server && h.from <= s.end + 500 && h.to >= s.start - 500);
  if (hole) return 'blackhole';
  // Planned faults count only where they happened: the backend reset, or stopped reading and the client gave up.
  if (s.mode === 1 && (up?.verdict === 'reset' || resets.has(s.id))) return 'planned_reset';
  // (a stall that the socket buffers hid from the client still leaves the backend without the FIN to report)
  if (s.mode === 2 && acc.length === 1 && (s.outcome === 'stalled' || (s.outcome === 'ok' && up === undefined))) return 'planned_stall';
  return null;
}
