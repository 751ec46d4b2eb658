// The WaitState control plane's dashboard: polls /dashboard/api/fleet every two seconds and
// draws it, then the shown fleet's page of instances from /dashboard/api/instances (paged
// on the server: a fleet may hold 10,000). Every text from the fleet (tags, rules, orgs,
// instance ids) goes in with textContent, never as HTML: they come from the pulses.
// `?instances_per_page=N&instances_sort=stale` in the page's URL set the instance list's
// page size and order.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#5aa9e6", "#f0b429", "#4cc38a", "#ef5b5b", "#b58cf0", "#7fd1c7"];
const search = new URLSearchParams(location.search);
const view = {
  org: null, site: null, page: 0, perPage: 20, shardsPage: 0,
  instPage: 0,
  instPerPage: Math.max(1, parseInt(search.get("instances_per_page"), 10) || 20),
  instSort: search.get("instances_sort") === "stale" ? "stale" : "id",
};
let polls = 0;

const $ = (id) => document.getElementById(id);

function token() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("waitstate-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("waitstate-token");
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  if (!Number.isFinite(n)) return "∞";
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  return n.toLocaleString("en-US", { maximumFractionDigits: n < 10 ? 2 : 1 });
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s <= 0) return "expired";
  const r = Math.round(s);
  if (r < 120) return r + " s";
  return Math.floor(r / 60) + " min " + (r % 60) + " s";
}

function ago(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return "just now";
  if (s < 120) return Math.round(s) + " s ago";
  return Math.round(s / 60) + " min ago";
}

// A number shown formatted, with its exact value in data-v (what the tests compare).
function setNum(el, n) {
  el.textContent = fmt(n);
  el.dataset.v = n === null || n === undefined ? "" : String(n);
}

function cell(row, value, opts = {}) {
  const td = document.createElement("td");
  if (opts.num) { td.className = "num"; setNum(td, value); } else { td.textContent = value; }
  if (opts.key) td.dataset.k = opts.key;
  row.appendChild(td);
  return td;
}

function fill(tbody, items, make) {
  const rows = items.map(make);
  tbody.replaceChildren(...rows);
}

function summarizePolicy(p) {
  const parts = [];
  if (p.killSignal) parts.push("kill");
  const blocked = Object.entries(p.tagMaxWeights || {}).filter(([, w]) => w === 0).map(([t]) => t);
  if (blocked.length) parts.push("blocked: " + blocked.join(", "));
  for (const [t, v] of Object.entries(p.tagThrottles || {})) parts.push(`${t} at ${fmt(v)}%`);
  for (const [t, v] of Object.entries(p.tagRateLimits || {})) parts.push(`${t} ≤ ${fmt(v)}/s`);
  if (p.priorityFloor !== undefined && p.priorityFloor !== null) parts.push("priority floor " + p.priorityFloor);
  if (p.globalThrottle !== undefined && p.globalThrottle !== null) parts.push("all at " + fmt(p.globalThrottle) + "%");
  return parts.length ? parts.join(" · ") : "open";
}

function drawChart(canvas, ago, series, pick) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  const span = Math.max(60, ago.length ? ago[0] : 0);
  let max = 0;
  for (const s of series) for (const v of pick(s)) if (v !== null && v > max) max = v;
  max = max > 0 ? max * 1.1 : 1;
  g.strokeStyle = "#263040"; g.fillStyle = "#7d8896"; g.font = "11px sans-serif"; g.lineWidth = 1;
  for (let i = 0; i <= 3; i++) {
    const y = pad.t + (h - pad.t - pad.b) * (i / 3);
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(w - pad.r, y); g.stroke();
    g.fillText(fmt(max * (1 - i / 3)), 2, y + 4);
  }
  g.fillText("-" + Math.round(span) + " s", pad.l, h - 4);
  g.fillText("now", w - pad.r - 22, h - 4);
  const x = (a) => pad.l + (w - pad.l - pad.r) * (1 - a / span);
  const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - v / max);
  series.forEach((s, i) => {
    g.strokeStyle = COLORS[i % COLORS.length]; g.lineWidth = 1.6; g.beginPath();
    let drawing = false;
    const values = pick(s);
    values.forEach((v, j) => {
      if (v === null) { drawing = false; return; }
      if (drawing) g.lineTo(x(ago[j]), y(v)); else g.moveTo(x(ago[j]), y(v));
      drawing = true;
    });
    g.stroke();
    // A point with no neighbour (p95 of a sparse tag) is a dot, not nothing.
    g.fillStyle = COLORS[i % COLORS.length];
    values.forEach((v, j) => {
      const alone = (k) => k < 0 || k >= values.length || values[k] === null;
      if (v !== null && alone(j - 1) && alone(j + 1)) {
        g.beginPath(); g.arc(x(ago[j]), y(v), 2.5, 0, 2 * Math.PI); g.fill();
      }
    });
  });
}

function render(d) {
  setNum($("fleets-count"), d.totals.fleets);
  setNum($("instances-count"), d.totals.instances);
  setNum($("rules-active-count"), d.totals.rules_active);
  setNum($("admitted-total"), d.totals.admitted);
  setNum($("shed-total"), d.totals.shed);

  const sh = d.shards;
  $("shards-range").textContent = sh.total ? `${sh.page * sh.per_page + 1}–${sh.page * sh.per_page + sh.items.length} of ${sh.total}` : "none yet";
  $("shards-prev").disabled = sh.page === 0;
  $("shards-next").disabled = (sh.page + 1) * sh.per_page >= sh.total;
  fill($("shards").tBodies[0], sh.items, (s) => {
    const tr = document.createElement("tr");
    tr.className = "click";
    tr.dataset.org = s.org; tr.dataset.site = s.site;
    const sel = d.selected && d.selected.org === s.org && d.selected.site === s.site;
    if (sel) tr.classList.add("selected");
    cell(tr, s.org); cell(tr, s.site || "(default)");
    cell(tr, s.instances, { num: true, key: "instances" });
    cell(tr, s.rules_active, { num: true, key: "rules_active" });
    cell(tr, s.admitted, { num: true, key: "admitted" });
    cell(tr, s.shed, { num: true, key: "shed" });
    tr.addEventListener("click", () => { view.org = s.org; view.site = s.site; view.page = 0; view.instPage = 0; poll(); });
    return tr;
  });

  const s = d.selected;
  if (!s) { $("sel-name").textContent = "(no pulse yet)"; return; }
  $("sel-name").textContent = s.org + (s.site ? " / " + s.site : "");
  setNum($("sel-instances"), s.instances);
  setNum($("sel-pulses"), s.pulses);
  $("sel-last-pulse").textContent = ago(s.last_pulse_seconds_ago);
  $("sel-policy-version").textContent = s.policy_version;
  $("sel-policy-changed").textContent = ago(s.policy_changed_seconds_ago);
  setNum($("sel-lease"), s.lease_seconds);
  $("sel-lease").textContent = s.lease_seconds + " s";
  setNum($("sel-admission-limit"), s.admission_limit);
  if (s.admission_limit === null) $("sel-admission-limit").textContent = "learned per instance";
  $("sel-policy").textContent = summarizePolicy(s.policy);

  fill($("rules").tBodies[0], s.rules, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.rule = r.rule;
    cell(tr, r.rule + (r.dry_run ? " (dry run)" : ""));
    const st = document.createElement("span");
    st.className = "state " + r.state;
    st.textContent = r.state + (r.step ? " " + r.step + "/3" : "");
    const td = document.createElement("td"); td.dataset.k = "state"; td.dataset.v = r.state; td.appendChild(st); tr.appendChild(td);
    cell(tr, r.value, { num: true, key: "value" });
    return tr;
  });
  if (!s.rules.length) {
    const tr = document.createElement("tr"); cell(tr, "no fleet rules"); $("rules").tBodies[0].replaceChildren(tr);
  }

  const t = s.tags;
  $("tags-range").textContent = t.total ? `${t.page * t.per_page + 1}–${t.page * t.per_page + t.items.length} of ${t.total}, busiest first` : "";
  $("tags-prev").disabled = t.page === 0;
  $("tags-next").disabled = (t.page + 1) * t.per_page >= t.total;
  fill($("tags").tBodies[0], t.items, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.tag = r.tag;
    cell(tr, r.tag);
    cell(tr, r.priority, { num: true, key: "priority" });
    cell(tr, r.admitted, { num: true, key: "admitted" });
    cell(tr, r.shed, { num: true, key: "shed" });
    cell(tr, r.errors, { num: true, key: "errors" });
    cell(tr, r.p95_ms, { num: true, key: "p95_ms" });
    return tr;
  });

  const legend = $("legend");
  legend.replaceChildren(...s.series.tags.map((ts, i) => {
    const sp = document.createElement("span");
    sp.style.setProperty("--c", COLORS[i % COLORS.length]);
    sp.textContent = ts.tag;
    return sp;
  }));
  drawChart($("chart-admitted"), s.series.ago, s.series.tags, (ts) => ts.admitted_rps);
  drawChart($("chart-shed"), s.series.ago, s.series.tags, (ts) => ts.shed_rps);
  drawChart($("chart-p95"), s.series.ago, s.series.tags, (ts) => ts.p95_ms);
}

function renderInstances(d) {
  const panel = $("instances-panel");
  const p = d.instances;
  $("instances-range").textContent = p.total
    ? `${p.page * p.per_page + 1}–${p.page * p.per_page + p.items.length} of ${p.total}`
    : "none live";
  $("instances-range").dataset.total = String(p.total);
  $("instances-prev").disabled = p.page === 0;
  $("instances-next").disabled = (p.page + 1) * p.per_page >= p.total;
  $("instances-sort").value = d.sort;
  fill($("instances").tBodies[0], p.items, (i) => {
    const tr = document.createElement("tr");
    tr.dataset.instance = i.id;
    cell(tr, i.id).className = "mono";
    const last = cell(tr, ago(i.last_pulse_seconds_ago), { key: "last_pulse" });
    last.dataset.v = String(i.last_pulse_seconds_ago);
    const v = cell(tr, i.policy_version === null ? "unknown" : i.policy_version, { key: "policy_version" });
    v.dataset.v = i.policy_version === null ? "" : i.policy_version;
    v.dataset.current = String(i.current);
    v.className = "mono" + (i.current ? "" : " stale");
    if (i.policy_version !== null && !i.current) v.textContent += " (older)";
    const lease = cell(tr, duration(i.lease_left_seconds), { key: "lease_left" });
    lease.dataset.v = String(i.lease_left_seconds);
    if (i.lease_left_seconds <= 0) lease.className = "stale";
    return tr;
  });
  panel.dataset.status = "ok";
}

async function pollInstances(selected, headers) {
  const panel = $("instances-panel");
  if (!selected) {
    $("instances").tBodies[0].replaceChildren();
    $("instances-range").textContent = "";
    panel.dataset.status = "ok";
    return;
  }
  const q = new URLSearchParams({
    org: selected.org, site: selected.site || "",
    page: view.instPage, per_page: view.instPerPage, sort: view.instSort,
  });
  try {
    const res = await fetch("/dashboard/api/instances?" + q, { headers, cache: "no-store" });
    if (res.status === 503) {
      panel.dataset.status = "unavailable";
      $("instances-range").textContent = "not available: the fleet store does not answer";
      return;
    }
    if (!res.ok) throw new Error("HTTP " + res.status);
    renderInstances(await res.json());
  } catch (e) {
    panel.dataset.status = "error";
    $("instances-range").textContent = "cannot load (" + e.message + ")";
  }
}

async function poll() {
  const q = new URLSearchParams({ page: view.page, per_page: view.perPage, shards_page: view.shardsPage });
  if (view.org !== null) { q.set("org", view.org); q.set("site", view.site || ""); }
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const status = $("status");
  try {
    const res = await fetch("/dashboard/api/fleet?" + q, { headers, cache: "no-store" });
    if (res.status === 401) {
      $("auth").hidden = false;
      document.body.dataset.status = "unauthorized";
      status.textContent = "needs the metrics token";
      return;
    }
    if (!res.ok) throw new Error("HTTP " + res.status);
    const d = await res.json();
    $("auth").hidden = true;
    render(d);
    await pollInstances(d.selected, headers);
    polls += 1;
    document.body.dataset.polls = String(polls);
    document.body.dataset.status = "ok";
    status.className = "status";
    status.textContent = "live · updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.body.dataset.status = "error";
    status.className = "status error";
    status.textContent = "cannot reach the control plane (" + e.message + "), retrying";
  }
}

$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("waitstate-token", $("auth-token").value);
  poll();
});
$("tags-prev").addEventListener("click", () => { view.page = Math.max(0, view.page - 1); poll(); });
$("tags-next").addEventListener("click", () => { view.page += 1; poll(); });
$("shards-prev").addEventListener("click", () => { view.shardsPage = Math.max(0, view.shardsPage - 1); poll(); });
$("shards-next").addEventListener("click", () => { view.shardsPage += 1; poll(); });
$("instances-prev").addEventListener("click", () => { view.instPage = Math.max(0, view.instPage - 1); poll(); });
$("instances-next").addEventListener("click", () => { view.instPage += 1; poll(); });
$("instances-sort").addEventListener("change", (e) => { view.instSort = e.target.value; view.instPage = 0; poll(); });

poll();
setInterval(poll, POLL_MS);
