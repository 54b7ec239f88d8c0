//! The pipeline page's HTML: a skeleton in the course page's document (page.rs), and a
//! script that fills it from GET /pipeline.json every two seconds. The script alone renders
//! the view, so the page and the JSON cannot disagree; every value is set as text, never as
//! markup. Long names (topics, reasons) wrap rather than widen the page past a phone's width.

use super::super::page::document;

/// Seconds between two readings of /pipeline.json.
pub const POLL_SECONDS: u32 = 2;

const BODY: &str = r#"<p><a href="/courses">Courses</a> · <a href="/pipeline.json">This page as JSON</a> · <a href="/metrics">Metrics</a></p>
<h1>Pipeline</h1>
<p id="live">connecting…</p>
<noscript><p>This page renders with JavaScript; without it, read <a href="/pipeline.json">/pipeline.json</a>.</p></noscript>
<h2>Replication slot</h2>
<table class="figures" style="width:100%;table-layout:fixed;overflow-wrap:anywhere">
<tr><th scope="row">Slot</th><td id="slot_name">–</td></tr>
<tr><th scope="row">State</th><td id="slot_state">–</td></tr>
<tr><th scope="row">Confirmed position</th><td id="slot_confirmed">–</td></tr>
<tr><th scope="row">WAL held</th><td id="slot_held">–</td></tr>
<tr><th scope="row">Time lag</th><td id="slot_lag">–</td></tr>
<tr><th scope="row">WAL status</th><td id="slot_wal_status">–</td></tr>
</table>
<h2>Stages</h2>
<table style="width:100%;table-layout:fixed;overflow-wrap:anywhere">
<thead><tr><th scope="col">Stage</th><th scope="col">Health</th><th scope="col">In /s</th><th scope="col">Out /s</th><th scope="col">Lag</th></tr></thead>
<tbody id="stages"></tbody>
</table>
<p id="restating"></p>
<h2>Dead letters</h2>
<p id="dead_count">–</p>
<ul id="dead_latest" style="overflow-wrap:anywhere"></ul>
<h2>Commit to course_stats</h2>
<p id="latency">–</p>
<h2>Not known here</h2>
<ul id="unknown" style="overflow-wrap:anywhere"></ul>"#;

/// The page.
pub fn page() -> String {
    document("Pipeline", BODY, &script())
}

fn script() -> String {
    let ms = POLL_SECONDS * 1000;
    format!(
        r#"<script>
(function () {{
  function $(id) {{ return document.getElementById(id); }}
  function text(id, t) {{ $(id).textContent = t; }}
  function bytes(n) {{
    if (n === null || n === undefined) return "–";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0, v = n;
    while (Math.abs(v) >= 1024 && i < units.length - 1) {{ v /= 1024; i++; }}
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }}
  function secs(s) {{ return s === null || s === undefined ? "–" : s.toFixed(s < 10 ? 1 : 0) + " s"; }}
  function rate(r) {{ return r === null || r === undefined ? "–" : r.toFixed(r < 10 ? 1 : 0); }}
  function list(id, items) {{
    var ul = $(id);
    while (ul.firstChild) ul.removeChild(ul.firstChild);
    items.forEach(function (t) {{ var li = document.createElement("li"); li.textContent = t; ul.appendChild(li); }});
  }}
  function slot(s) {{
    if (!s) {{ ["slot_name", "slot_state", "slot_confirmed", "slot_held", "slot_lag", "slot_wal_status"].forEach(function (id) {{ text(id, "unknown"); }}); return; }}
    text("slot_name", s.name);
    text("slot_state", !s.created ? "not created yet (cdc creates it on first start)" : s.active ? "active (cdc connected)" : "inactive (no cdc connected)");
    text("slot_confirmed", s.confirmed_flush || "–");
    var held = $("slot_held");
    held.textContent = s.wal_held_bytes === null ? "–" : bytes(s.wal_held_bytes);
    held.setAttribute("data-bytes", s.wal_held_bytes === null ? "" : String(s.wal_held_bytes));
    var lag = $("slot_lag");
    lag.textContent = s.time_lag_s === null ? "–" : s.oldest_waiting_commit
      ? secs(s.time_lag_s) + " (oldest waiting change committed " + s.oldest_waiting_commit + ")"
      : "0 s (no change waiting)";
    lag.setAttribute("data-seconds", s.time_lag_s === null ? "" : String(s.time_lag_s));
    text("slot_wal_status", s.wal_status || "–");
  }}
  function stages(v) {{
    var rows = {{}}, order = ["cdc", "fraud", "verdicts", "stats"];
    function row(name) {{ if (!rows[name]) {{ rows[name] = {{ lag: [] }}; if (order.indexOf(name) < 0) order.push(name); }} return rows[name]; }}
    v.process.stages.forEach(function (s) {{ if (s.name !== "api") row(s.name).process = s; }});
    if (v.slot && v.slot.created) row("cdc").lag.push("slot: " + bytes(v.slot.wal_held_bytes) + " of WAL, " + secs(v.slot.time_lag_s));
    v.positions.forEach(function (p) {{
      row(p.stage).lag.push(p.topic + "/" + p.partition + ": " + (p.at === null ? "nothing committed yet" : p.behind === null ? "at " + p.at : p.behind + " behind"));
    }});
    var body = $("stages");
    while (body.firstChild) body.removeChild(body.firstChild);
    order.forEach(function (name) {{
      var r = row(name), p = r.process, h = p && p.health;
      var health = h ? h.state + (h.reason ? ": " + h.reason : "") : v.process.runs_stages ? "not run here" : "unknown here";
      var tr = document.createElement("tr");
      tr.id = "stage_" + name;
      [name, health, p ? rate(p.events_in_per_s) : "–", p ? rate(p.events_out_per_s) : "–"].forEach(function (t, i) {{
        var cell = document.createElement(i ? "td" : "th");
        if (!i) cell.setAttribute("scope", "row");
        cell.textContent = t;
        tr.appendChild(cell);
      }});
      var lag = document.createElement("td");
      lag.className = "lag";
      lag.textContent = r.lag.length ? r.lag.join("; ") : "–";
      tr.appendChild(lag);
      body.appendChild(tr);
    }});
    text("restating", v.restating || "");
  }}
  function dead(d, by) {{
    if (!d) {{ text("dead_count", "unknown"); list("dead_latest", []); return; }}
    text("dead_count", !d.exists ? "None (" + d.topic + " is created with the first)."
      : d.offsets + " in " + d.topic + " (offsets retained; a transaction's commit marker takes one)" + by + ".");
    list("dead_latest", d.latest.map(function (l) {{
      return (l.at || "") + " " + (l.stage || "?") + " " + (l.source || "") + ": " + (l.reason || "(no reason)");
    }}));
  }}
  function latency(l, window) {{
    if (!l.count) {{ text("latency", "No change reached course_stats in this process yet."); return; }}
    var r = l.recent, t = "";
    if (r && r.count) t = "Last " + window + " s: " + r.count + " changes, mean " + secs(r.mean_s) + ", median at most " + secs(r.p50_at_most_s) + ", 99th percentile at most " + (r.p99_at_most_s === null ? "over a minute" : secs(r.p99_at_most_s)) + ". ";
    else if (r) t = "Last " + window + " s: no change reached course_stats. ";
    text("latency", t + "Since start: " + l.count + " changes, mean " + secs(l.mean_s) + ".");
  }}
  function render(v) {{
    slot(v.slot);
    stages(v);
    var counted = v.process.stages.filter(function (s) {{ return s.dead_letters_total; }});
    dead(v.dead_letters, counted.length ? "; sent since this process started: " + counted.map(function (s) {{ return s.name + " " + s.dead_letters_total; }}).join(", ") : "");
    latency(v.process.latency, v.process.rate_window_s);
    list("unknown", v.unknown.length ? v.unknown : ["Nothing: every part was read."]);
    text("live", "live, read " + v.read_at);
  }}
  function poll() {{
    fetch("/pipeline.json", {{ cache: "no-store" }})
      .then(function (r) {{ if (!r.ok) throw new Error(r.status); return r.json(); }})
      .then(render)
      .catch(function () {{ text("live", "reconnecting…"); }})
      .then(function () {{ setTimeout(poll, {ms}); }});
  }}
  poll();
}})();
</script>
"#
    )
}
