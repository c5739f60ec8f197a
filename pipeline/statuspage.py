"""The admin server's status page (`/`): the pipelines as a graph and what every component is doing.

Like the Collector's zpages, for an operator with a browser: each pipeline is
drawn receivers → processors → exporters (connectors appear at both ends of the
pipelines they join); every component shows its state, the items per second
over the last minute, totals, refusals and drops by reason, queue fill and its
last warnings and errors. The page is static HTML with a small script that
reads `/status` every two seconds and redraws, so it needs nothing but the
admin server, and `/status` stays the one source of truth (`otelpipe top` reads
the same JSON). Text is inserted with `textContent`, never as HTML.
"""
from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>otelpipe status</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #f6f7f9; }
 h1 { font-size: 1.3em; margin: 0 0 .2em; } .meta { color: #5b6475; margin-bottom: 1em; }
 .pipeline { background: #fff; border: 1px solid #d8dce3; border-radius: 8px; padding: .8em; margin: 0 0 1em; }
 .pipeline h2 { font-size: 1em; margin: 0 0 .6em; }
 .flow { display: flex; align-items: stretch; gap: .4em; flex-wrap: wrap; }
 .stage { display: flex; flex-direction: column; gap: .4em; }
 .arrow { align-self: center; color: #8a93a5; font-size: 1.4em; }
 .comp { border: 1px solid #c3c9d4; border-radius: 6px; padding: .4em .6em; min-width: 11em; background: #fbfcfd; }
 .comp.receiver { border-left: 4px solid #3b82f6; } .comp.processor { border-left: 4px solid #a855f7; }
 .comp.exporter { border-left: 4px solid #10b981; } .comp.connector { border-left: 4px solid #f59e0b; }
 .comp .id { font-weight: 600; } .comp .kind { color: #5b6475; font-size: .85em; }
 .rate { font-variant-numeric: tabular-nums; } .bad { color: #b42318; } .err { color: #b42318; font-size: .85em; }
 .small { font-size: .85em; color: #3d4556; }
</style>
</head>
<body>
<h1>otelpipe</h1>
<div class="meta" id="meta">loading /status…</div>
<div id="pipelines"></div>
<script>
"use strict";
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function num(v) { return (v || 0).toLocaleString("en-US", {maximumFractionDigits: 1}); }
function reasons(obj) {
  return Object.entries(obj || {}).map(([k, v]) => k + " " + num(v)).join(", ");
}
function box(comp, kindLabel) {
  const b = el("div", "comp " + kindLabel);
  b.dataset.component = kindLabel + "/" + comp.id;
  b.appendChild(el("div", "id", comp.id));
  b.appendChild(el("div", "kind", kindLabel + " · " + comp.state));
  const a = comp.activity || {};
  const rate = el("div", "rate", num(a.rate) + " items/s");
  rate.dataset.rate = String(a.rate || 0);
  b.appendChild(rate);
  const totals = [];
  for (const k of ["accepted", "incoming", "outgoing", "sent"]) {
    if (a[k] !== undefined) totals.push(k + " " + num(a[k]));
  }
  if (totals.length) b.appendChild(el("div", "small", totals.join(" · ")));
  for (const k of ["refused", "dropped", "send_failed", "enqueue_failed"]) {
    if (a[k]) b.appendChild(el("div", "small bad", k + " " + num(a[k]) + " (" + reasons(a[k + "_reasons"]) + ")"));
  }
  if (a.queue_capacity) b.appendChild(el("div", "small", "queue " + num(a.queue_size) + " / " + num(a.queue_capacity)));
  for (const e of (comp.last_errors || []).slice(-2)) b.appendChild(el("div", "err", e.level + ": " + e.msg));
  return b;
}
function find(components, kind, id, pipeline) {
  return components.find(c => c.kind === kind && c.id === id && (pipeline === null || c.pipeline === pipeline))
      || {id: id, state: "?", activity: {}};
}
function draw(status) {
  const meta = document.getElementById("meta");
  meta.textContent = "version " + status.version + " · " + (status.ready ? "ready" : "not ready")
    + (status.draining ? " · draining" : "") + " · up " + Math.round(status.uptime_s) + " s";
  const root = document.getElementById("pipelines");
  root.replaceChildren();
  const comps = status.components || [];
  const connectors = new Set(comps.filter(c => c.kind === "connector").map(c => c.id));
  for (const [pid, p] of Object.entries(status.pipelines || {})) {
    const card = el("div", "pipeline");
    card.dataset.pipeline = pid;
    card.appendChild(el("h2", "", "pipeline " + pid));
    const flow = el("div", "flow");
    const stages = [
      p.receivers.map(id => connectors.has(id) ? box(find(comps, "connector", id, null), "connector")
                                                : box(find(comps, "receiver", id, null), "receiver")),
      ...p.processors.map(id => [box(find(comps, "processor", id, pid), "processor")]),
      p.exporters.map(id => connectors.has(id) ? box(find(comps, "connector", id, null), "connector")
                                                : box(find(comps, "exporter", id, null), "exporter")),
    ];
    stages.forEach((boxes, i) => {
      if (i) flow.appendChild(el("div", "arrow", "→"));
      const stage = el("div", "stage");
      boxes.forEach(b => stage.appendChild(b));
      flow.appendChild(stage);
    });
    card.appendChild(flow);
    root.appendChild(card);
  }
}
async function refresh() {
  try {
    const resp = await fetch("status", {cache: "no-store"});
    draw(await resp.json());
  } catch (e) {
    document.getElementById("meta").textContent = "cannot read /status: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
