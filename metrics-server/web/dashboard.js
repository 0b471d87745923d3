// The metrics server's page: plain browser JavaScript, no build step, no external resources.
// Reads the JSON API every few seconds and redraws: totals, a bar chart of partitions by key
// range (inline SVG), nodes, jobs, the partition table, and a shard plan on request.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const PALETTE = ['#2e5aac', '#e07b39', '#3a9a6a', '#9b59b6', '#c0392b', '#16a2b8', '#8c6d1f', '#d6336c', '#5c7cfa', '#2f9e44'];
const state = { cluster: null, partitions: [], nodes: [], jobs: null, movement: null, lastOk: 0, timer: undefined };

/** Element builder; text children become text nodes, so store data is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:') ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'style' && typeof v === 'object') for (const [prop, value] of Object.entries(v)) el.style.setProperty(prop, value);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const fmtInt = (n) => (n === null || n === undefined ? '—' : Math.round(n).toLocaleString('en-US'));
function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${n < 0 ? '-' : ''}${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}
function fmtAge(ms) {
  if (ms === null || ms === undefined) return 'never';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
const since = (unixMs) => (unixMs ? fmtAge(Date.now() - unixMs) : 'never');
const rangeText = (p) => `[${p.startDisplay || '−∞'}, ${p.endDisplay || '+∞'})`;

function nodeColours(nodes) {
  const colours = new Map();
  nodes.forEach((n, i) => colours.set(n.node, PALETTE[i % PALETTE.length]));
  return colours;
}

async function getJson(path) {
  const res = await fetch(path, { headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

async function refresh() {
  try {
    const [cluster, partitions, nodes, jobs, movement] = await Promise.all([getJson('api/cluster'), getJson('api/partitions'), getJson('api/nodes'), getJson('api/jobs'), getJson('api/movement')]);
    Object.assign(state, { cluster, partitions: partitions.partitions, nodes: nodes.nodes, jobs, movement, lastOk: Date.now() });
    render();
    setBanner(null);
  } catch (err) {
    setBanner(`Cannot reach the metrics server (${err.message}); showing what was last loaded ${since(state.lastOk)}.`);
  } finally {
    const every = Math.min(5000, Math.max(1000, state.cluster ? state.cluster.pollIntervalMs : 5000));
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, every);
  }
}

function setBanner(text) {
  const el = document.getElementById('banner');
  el.hidden = !text;
  el.textContent = text || '';
}

function render() {
  const c = state.cluster;
  const poll = c.lastPoll;
  const readiness = c.ready ? '' : ' · waiting for the first answer from a store node';
  document.getElementById('status-line').textContent =
    `map version ${c.mapVersion ?? '—'} · polled ${poll ? since(poll.atMs) : 'not yet'}${poll ? ` in ${Math.round(poll.durationMs)} ms` : ''} · every ${c.pollIntervalMs / 1000}s${readiness}`;
  renderSummary(c);
  renderChart();
  renderNodes();
  renderJobs();
  renderMovement();
  renderPartitionTable();
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return '—';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
const clock = (unixMs) => new Date(unixMs).toISOString().slice(11, 19);

/** Operations with progress bars (bytes, rows, ETA), the per-node share of data, and data awaiting GC (GET api/movement). */
function renderMovement() {
  const m = state.movement;
  if (!m) return;
  const note = document.getElementById('movement-note');
  note.textContent = m.etcd === 'not-configured'
    ? 'No etcd configured: start the metrics server with --etcd URL to see operations and data awaiting GC (per-node shares come from the partition figures).'
    : m.etcd === 'unreachable' ? `etcd unreachable (${m.error}); showing what was read ${since(m.readAtMs)}.` : `Operations and GC reports read from etcd ${since(m.readAtMs)}.`;
  const ops = m.operations.map((o) => {
    const fraction = o.bytesTotal ? Math.min(1, o.bytesDone / o.bytesTotal) : null;
    const bar = fraction === null ? h('div', {}, badge(o.state)) : h('div', { class: 'progress', title: `${Math.round(fraction * 100)}%` }, h('div', { style: { width: `${Math.round(fraction * 100)}%` } }));
    const figures = [
      `${fmtBytes(o.bytesDone)}${o.bytesTotal !== null ? ` / ${fmtBytes(o.bytesTotal)}` : ''}`,
      `${fmtInt(o.rowsDone)}${o.rowsTotal !== null ? ` / ${fmtInt(o.rowsTotal)}` : ''} rows`,
      `step ${Math.min(o.stepsDone + 1, o.steps)} of ${o.steps}`,
      `ETA ${fmtSeconds(o.etaSeconds)}`,
    ];
    return h('div', { class: 'job operation', 'data-operation': o.id },
      h('div', { class: 'id', title: o.id }, badge(o.state === 'running' ? 'active' : o.state, o.state), ' ', o.kind, ' ', h('span', { class: 'muted' }, o.id)),
      bar,
      h('div', { class: 'muted' }, figures.join(' · ') + (o.stalledSeconds >= 60 ? ` · no progress for ${fmtSeconds(o.stalledSeconds)}` : '')),
      h('div', {}),
      o.current ? h('div', { class: 'muted wide', title: o.current }, o.current) : null,
    );
  });
  document.getElementById('movement-operations').replaceChildren(...(ops.length ? ops : [h('p', { class: 'muted' }, m.etcd === 'not-configured' ? '—' : 'None running.')]));
  const gc = m.gc.map((g) => h('div', { class: 'gc-row', 'data-node': g.node, 'data-partition': g.partition }, `partition ${g.partition} (${fmtBytes(g.bytes)}) on ${g.node}, deleted at ${clock(g.deleteAtMs)} UTC`));
  document.getElementById('movement-gc').replaceChildren(...(gc.length ? gc : [h('p', { class: 'muted' }, m.etcd === 'not-configured' ? '—' : 'Nothing waiting.')]));
  const colours = nodeColours(m.nodes);
  const shares = m.nodes.map((n) =>
    h('div', { class: 'share', 'data-node': n.node },
      h('div', { class: 'share-label' }, n.node),
      h('div', { class: 'share-bar', title: `${(n.share * 100).toFixed(1)}% · ${fmtBytes(n.bytes)} in ${n.replicas} replicas` }, h('div', { style: { width: `${(n.share * 100).toFixed(1)}%`, background: colours.get(n.node) } })),
      h('div', { class: 'share-value' }, `${(n.share * 100).toFixed(1)}% · ${fmtBytes(n.bytes)}`),
    ),
  );
  document.getElementById('movement-shares').replaceChildren(...(shares.length ? shares : [h('p', { class: 'muted' }, 'No partition figures yet.')]));
}

function card(label, value, sub, extra) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub ? h('div', { class: 'sub' }, sub) : null, extra);
}

function sparkline(values, width = 150, height = 28) {
  if (values.length < 2) return null;
  const min = Math.min(...values);
  const max = Math.max(...values);
  const span = max - min || 1;
  const points = values.map((v, i) => `${((i / (values.length - 1)) * width).toFixed(1)},${(height - 2 - ((v - min) / span) * (height - 4)).toFixed(1)}`);
  return h('svg:svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'trend' }, h('svg:polyline', { points: points.join(' '), fill: 'none', stroke: '#2e5aac', 'stroke-width': 1.5 }));
}

function renderSummary(c) {
  const history = c.history || [];
  let rate = null;
  if (history.length >= 2) {
    const a = history[history.length - 2];
    const b = history[history.length - 1];
    if (b.atMs > a.atMs) rate = ((b.entries - a.entries) * 1000) / (b.atMs - a.atMs);
  }
  const down = c.nodes - c.nodesUp;
  const running = state.jobs && state.jobs.queues ? state.jobs.queues.filter((q) => q.role === 'flow').reduce((s, q) => s + (q.counts.active || 0) + (q.counts['waiting-children'] || 0), 0) : null;
  const staleNote = [c.stalePartitions ? `${c.stalePartitions} stale` : '', c.unknownPartitions ? `${c.unknownPartitions} never read` : ''].filter(Boolean).join(', ');
  document.getElementById('summary').replaceChildren(
    card('entries (approx.)', fmtInt(c.entries), rate === null ? 'net change: —' : `net change: ${rate >= 0 ? '+' : ''}${fmtInt(rate)}/s`, sparkline(history.map((p) => p.entries))),
    card('logical size', fmtBytes(c.logicalBytes), `on disk ${fmtBytes(c.diskBytes)}`),
    card('partitions', fmtInt(c.partitions), staleNote || 'all figures current'),
    card('store nodes', `${c.nodesUp} / ${c.nodes} up`, down > 0 ? `${down} unreachable` : 'all answering'),
    card('jobs running', running === null ? '—' : fmtInt(running), state.jobs && state.jobs.redis !== 'ok' ? (state.jobs.redis === 'not-configured' ? 'no Redis configured' : 'Redis unreachable') : 'ingest, backup, restore'),
  );
}

function renderChart() {
  const container = document.getElementById('chart');
  const parts = state.partitions;
  const colours = nodeColours(state.nodes);
  if (parts.length === 0) {
    container.replaceChildren(h('p', { class: 'muted' }, 'No partition map yet.'));
    return;
  }
  const width = Math.max(container.clientWidth - 16, Math.min(parts.length * 4, 4000), 320);
  const left = 70;
  const plotW = width - left - 10;
  const bandH = 110;
  const gap = 26;
  const labelH = 60;
  const stripH = 6;
  const height = bandH * 2 + gap + stripH + labelH + 14;
  const step = plotW / parts.length;
  const barW = Math.max(1, step * 0.8);
  const svg = h('svg:svg', { id: 'partition-chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'partitions by key range: entries and bytes' });
  svg.append(h('svg:defs', {}, h('svg:pattern', { id: 'hatch', width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
    h('svg:rect', { width: 6, height: 6, fill: '#f2f4f7' }), h('svg:line', { x1: 0, y1: 0, x2: 0, y2: 6, stroke: '#98a2b3', 'stroke-width': 3 }))));
  const bands = [
    { key: 'entries', label: 'entries', fmt: fmtInt, top: 4 },
    { key: 'logicalBytes', label: 'bytes', fmt: fmtBytes, top: 4 + bandH + gap },
  ];
  for (const band of bands) {
    const max = Math.max(1, ...parts.map((p) => p[band.key] || 0));
    const bottom = band.top + bandH;
    svg.append(h('svg:line', { class: 'axis', x1: left, x2: width - 10, y1: bottom, y2: bottom }));
    svg.append(h('svg:text', { x: left - 6, y: band.top + 10, 'text-anchor': 'end' }, band.fmt(max)));
    svg.append(h('svg:text', { x: left - 6, y: bottom, 'text-anchor': 'end' }, '0'));
    svg.append(h('svg:text', { x: 4, y: band.top + bandH / 2 }, band.label));
    parts.forEach((p, i) => {
      const x = left + i * step + (step - barW) / 2;
      const value = p[band.key];
      const title = `partition ${p.id} ${rangeText(p)} on ${p.node}\n${fmtInt(p.entries)} entries, ${fmtBytes(p.logicalBytes)} logical, ${fmtBytes(p.diskBytes)} on disk\n${p.status === 'ok' ? 'current' : p.status}, figures ${fmtAge(p.ageMs)}`;
      if (value === null) {
        svg.append(h('svg:rect', { class: 'bar unknown', x, y: bottom - 14, width: barW, height: 14, fill: 'none', stroke: '#98a2b3', 'stroke-dasharray': '2 2', 'data-partition': p.id }, h('svg:title', {}, title)));
        if (barW >= 8) svg.append(h('svg:text', { x: x + barW / 2, y: bottom - 18, 'text-anchor': 'middle' }, '?'));
        return;
      }
      const barH = Math.max(value > 0 ? 1 : 0, (value / max) * (bandH - 14));
      const fill = p.status === 'unreachable' ? 'url(#hatch)' : colours.get(p.node) || '#98a2b3';
      svg.append(h('svg:rect', { class: `bar ${p.status}`, x, y: bottom - barH, width: barW, height: barH, fill, stroke: p.status === 'ok' ? null : colours.get(p.node), 'data-partition': p.id }, h('svg:title', {}, title)));
    });
  }
  // A strip under the bars says which node owns each partition, also for empty ones.
  const stripTop = 4 + bandH * 2 + gap + 4;
  parts.forEach((p, i) => {
    const fill = p.status === 'unreachable' ? 'url(#hatch)' : colours.get(p.node) || '#98a2b3';
    svg.append(h('svg:rect', { class: 'owner', x: left + i * step, y: stripTop, width: Math.max(1, step - 1), height: stripH, fill }, h('svg:title', {}, `partition ${p.id} on ${p.node} (${p.status})`)));
  });
  // Key-range labels: the start key of every k-th partition, so they do not overlap.
  const every = Math.max(1, Math.ceil(40 / step));
  const labelTop = stripTop + stripH + 12;
  parts.forEach((p, i) => {
    if (i % every !== 0) return;
    const x = left + i * step + step / 2;
    const text = p.startDisplay ? (p.startDisplay.length > 14 ? `${p.startDisplay.slice(0, 13)}…` : p.startDisplay) : '−∞';
    svg.append(h('svg:text', { x, y: labelTop, transform: `rotate(35 ${x} ${labelTop})` }, text, h('svg:title', {}, `partition ${p.id} starts at ${p.startDisplay || 'the beginning of the keyspace'}`)));
  });
  container.replaceChildren(svg);
  document.getElementById('legend').replaceChildren(
    ...state.nodes.map((n) => h('span', { style: { '--c': colours.get(n.node) } }, `${n.node}${n.up === false ? ' (unreachable)' : ''}`)),
  );
}

function badge(kind, text) {
  return h('span', { class: `badge ${kind}` }, text || kind);
}

function renderNodes() {
  const rows = state.nodes.map((n) =>
    h('tr', {},
      h('td', {}, n.node),
      h('td', { title: n.error || '' }, n.up === null ? badge('unknown', 'not polled yet') : n.up ? badge('up') : badge('down', 'unreachable')),
      h('td', { class: 'num' }, n.partitions),
      h('td', { class: 'num' }, n.replicas ?? '—'),
      h('td', { class: 'num' }, n.mapVersion ?? '—'),
      h('td', {}, since(n.lastSeenMs), n.error ? h('div', { class: 'muted error-text', title: n.error }, n.error) : null),
    ),
  );
  document.querySelector('#nodes-table tbody').replaceChildren(...rows);
}

function jobRow(job) {
  const bar = job.progress === null ? h('div', {}, badge(job.state)) : h('div', { class: 'progress', title: `${Math.round(job.progress * 100)}%` }, h('div', { style: { width: `${Math.round(job.progress * 100)}%` } }));
  const when = job.finishedMs ? `finished ${since(job.finishedMs)}` : job.startedMs ? `started ${since(job.startedMs)}` : `queued ${since(job.createdMs)}`;
  return h('div', { class: 'job' },
    h('div', { class: 'id', title: job.id }, badge(job.state), ' ', job.id),
    bar,
    h('div', { class: 'muted' }, `${job.progressText} · ${when}${job.attemptsMade > 1 ? ` · ${job.attemptsMade} attempts` : ''}`),
    h('div', {}),
    job.failedReason ? h('div', { class: 'why', title: job.failedReason }, job.failedReason) : null,
  );
}

function renderJobs() {
  const el = document.getElementById('jobs');
  const jobs = state.jobs;
  document.getElementById('queues-link').hidden = !jobs || jobs.redis === 'not-configured';
  if (!jobs || jobs.redis === 'not-configured') {
    el.replaceChildren(h('p', { class: 'muted' }, 'No Redis configured: start the metrics server with --redis URL (or SHARDPIPE_REDIS_URL) to see ingest, backup and restore jobs.'));
    return;
  }
  if (jobs.redis === 'unreachable') {
    el.replaceChildren(h('p', { class: 'banner' }, `Redis unreachable: ${jobs.error}`));
    return;
  }
  if (jobs.queues.length === 0) {
    el.replaceChildren(h('p', { class: 'muted' }, 'No ingest, backup or restore has run against this Redis yet.'));
    return;
  }
  el.replaceChildren(
    ...jobs.queues.map((q) => {
      const counts = Object.entries(q.counts).filter(([, n]) => n > 0).map(([state, n]) => h('span', {}, `${state} ${fmtInt(n)}`));
      return h('div', { class: 'queue', 'data-queue': q.name },
        h('h3', {}, `${q.kind} · ${q.role === 'flow' ? 'operations' : 'tasks'} `, h('span', { class: 'muted' }, q.name), q.paused ? badge('delayed', 'paused') : null),
        h('div', { class: 'counts' }, counts.length ? counts : h('span', {}, 'empty')),
        q.running.length ? [h('div', { class: 'muted' }, 'running'), ...q.running.map(jobRow)] : null,
        q.role === 'flow' && q.recent.length ? [h('div', { class: 'muted' }, 'recent'), ...q.recent.map(jobRow)] : null,
        q.role === 'task' ? q.recent.filter((j) => j.state === 'failed').slice(0, 3).map(jobRow) : null,
      );
    }),
  );
}

/** A partition's chain, head first: each replica's node, state, lag behind the head and a sync's progress. */
function chainCell(p) {
  const chain = p.chain && p.chain.length ? p.chain : [{ node: p.node, state: 'serving', up: null, lagSequences: null, sync: null }];
  return chain.map((r, i) => {
    const notes = [];
    if (r.state !== 'serving') notes.push(r.state);
    if (r.sync) notes.push(`${fmtInt(r.sync.rows)}${r.sync.totalRows ? ` / ${fmtInt(r.sync.totalRows)}` : ''} rows, ${fmtBytes(r.sync.bytes)}`);
    if (r.lagSequences) notes.push(`${fmtInt(r.lagSequences)} behind`);
    if (r.up === false) notes.push('unreachable');
    const title = `${i === 0 ? 'head' : i === chain.length - 1 ? 'tail' : 'middle'}: ${r.node} ${r.state}${r.lastSeq !== null && r.lastSeq !== undefined ? `, last sequence ${r.lastSeq}` : ''}${r.unacked ? `, ${r.unacked} forwards unacknowledged` : ''}`;
    return h('span', { class: `replica ${r.state}${r.up === false ? ' down' : ''}`, title, 'data-node': r.node }, i > 0 ? ' → ' : '', r.node, notes.length ? h('span', { class: 'muted' }, ` (${notes.join(', ')})`) : null);
  });
}

function renderPartitionTable() {
  const rows = state.partitions.map((p) => {
    const r = p.rates;
    const writes = r ? `${r.entriesPerSecond >= 0 ? '+' : ''}${fmtInt(r.entriesPerSecond)}/s${r.wrote ? '' : ' (idle)'}` : '—';
    return h('tr', { class: p.status === 'ok' ? '' : 'stale', 'data-partition': p.id },
      h('td', { class: 'num' }, p.id),
      h('td', { class: 'range', title: `hex [${p.start || '""'}, ${p.end || '""'})` }, rangeText(p)),
      h('td', { class: 'chain' }, chainCell(p)),
      h('td', { class: 'num' }, fmtInt(p.entries)),
      h('td', { class: 'num' }, fmtBytes(p.logicalBytes)),
      h('td', { class: 'num' }, fmtBytes(p.diskBytes)),
      h('td', {}, since(p.lastWriteMs)),
      h('td', { class: 'num', title: r ? `net ${fmtBytes(r.logicalBytesPerSecond)}/s over ${Math.round(r.intervalMs / 1000)}s` : '' }, writes),
      h('td', { class: 'num', title: 'entries written per second (puts, deletes, bulk rows)' }, r && r.writesPerSecond !== null ? fmtInt(r.writesPerSecond) : '—'),
      h('td', { class: 'num', title: 'entries read per second (gets, scans, checksums)' }, r && r.readsPerSecond !== null ? fmtInt(r.readsPerSecond) : '—'),
      h('td', {}, p.status === 'ok' ? fmtAge(p.ageMs) : [badge(p.status), ` ${fmtAge(p.ageMs)}`]),
    );
  });
  document.querySelector('#partitions-table tbody').replaceChildren(...rows);
}

async function plan(event) {
  event.preventDefault();
  const unit = document.getElementById('plan-unit').value;
  const value = document.getElementById('plan-value').value;
  const status = document.getElementById('plan-status');
  const table = document.getElementById('plan-table');
  status.textContent = 'planning…';
  try {
    const res = await fetch(`api/shards?${unit}=${encodeURIComponent(value)}`);
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : `HTTP ${res.status}`);
    status.textContent = `${body.shards.length} shards, map version ${body.mapVersion}${body.stalePartitions.length ? `, ${body.stalePartitions.length} partitions from last known figures` : ''}`;
    table.querySelector('tbody').replaceChildren(
      ...body.shards.map((s) => h('tr', {}, h('td', { class: 'num' }, s.index), h('td', { class: 'range' }, rangeText(s)), h('td', {}, s.partitions.join(', ')), h('td', { class: 'num' }, fmtInt(s.approxRows)), h('td', { class: 'num' }, fmtBytes(s.approxBytes)))),
    );
    table.hidden = false;
  } catch (err) {
    status.textContent = `no plan: ${err.message}`;
    table.hidden = true;
  }
}

document.getElementById('plan-form').addEventListener('submit', plan);
window.addEventListener('resize', () => state.cluster && renderChart());
refresh();
