// RelayMesh console: one page, hash routes, the JSON API under /api with the session
// cookie that POST /api/login sets (HttpOnly: no script here can read it, and no token
// ever goes into a cookie from JavaScript). Every value from the API reaches the page
// through textContent or an attribute set by the DOM API, never through innerHTML.
"use strict";

// -- DOM helpers -------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

/** h("td", {class: "num"}, "text", childNode, ...): children are text or nodes. */
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
}
const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-");
function ago(ms) {
  if (!ms) return "-";
  const s_ = Math.max(0, (Date.now() - ms) / 1000);
  if (s_ < 90) return `${Math.round(s_)} s ago`;
  if (s_ < 5400) return `${Math.round(s_ / 60)} min ago`;
  if (s_ < 129600) return `${Math.round(s_ / 3600)} h ago`;
  return `${Math.round(s_ / 86400)} d ago`;
}
const badge = (status) => h("span", {class: `badge s-${status}`}, status);
const json = (v) => (v === null || v === undefined ? "-" : JSON.stringify(v, null, 2));
function table(headers, rows, rowAttrs) {
  return h("div", {class: "scroll"}, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows.map((r, i) => h("tr", rowAttrs ? rowAttrs(i) : {},
      r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c ?? "-")))))
      : h("tr", {}, h("td", {colspan: headers.length, class: "muted"}, "nothing here")))));
}
function toast(text) {
  const t = h("div", {class: "toast", role: "status"}, text);
  document.body.append(t);
  setTimeout(() => t.remove(), 4000);
}
function setBanner(text) { $("banner").textContent = text || ""; $("banner").hidden = !text; }

// -- API -----------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
async function request(method, path, body) {
  const init = {method, credentials: "same-origin", headers: {}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    const doc = await resp.json().catch(() => ({}));
    throw new HttpError(resp.status, `${resp.status} ${doc.error || resp.statusText}`);
  }
  return resp;
}
const get = async (path) => (await request("GET", path)).json();
const post = async (path, body) => (await request("POST", path, body)).json();
function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

// -- confirmation --------------------------------------------------------------------------

function confirmAction(text, yesLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yesLabel || "Confirm";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
    dialog.returnValue = "";
    dialog.showModal();
  });
}
/** A write button: only built for a role that may write (the server refuses anyway). */
function writeButton(label, attrs, action) {
  if (!state.me || !state.me.can_write) return null;
  const button = h("button", {type: "button", class: "write", ...attrs}, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try { await action(); } catch (err) { toast(err.message); } finally { button.disabled = false; }
  });
  return button;
}

// -- state, login, routing -------------------------------------------------------------------

const state = {me: null, page: null, stats: null, events: null, retryMs: 1000, retryTimer: null};

async function start() {
  try {
    state.me = await get("/api/me");
  } catch (err) {
    if (err instanceof HttpError && err.status === 401) return showLogin("");
    setBanner(`cannot reach the node: ${err.message}`);
    setTimeout(start, 3000);
    return;
  }
  $("login").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("who").textContent = `${state.me.name} (${state.me.role})`;
  $("logout").hidden = state.me.name === "local";
  setBanner("");
  listen();
  route();
}
function showLogin(message) {
  stopListening();
  state.me = null;
  $("nav").hidden = true; $("who").hidden = true; $("logout").hidden = true;
  $("page").replaceChildren();
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}
$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await post("/api/login", {token: $("token").value});
    $("token").value = "";
    start();
  } catch (err) { $("login-error").textContent = `login failed: ${err.message}`; }
});
$("logout").addEventListener("click", async () => {
  try { await post("/api/logout", {}); } catch (err) { toast(err.message); }
  showLogin("logged out");
});

const PAGES = {};
function route() {
  if (!state.me) return;
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const page = PAGES[name] || PAGES.overview;
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#/${name}` ||
      (name === "workflow" && a.getAttribute("href") === "#/workflows"));
  }
  if (state.page && state.page.leave) state.page.leave();
  const root = h("div", {id: `page-${name}`, class: "page"});
  $("page").replaceChildren(root);
  state.page = {name, root, live: null, leave: null};
  page(root, rest.map(decodeURIComponent), state.page).catch(handlePageError);
}
function handlePageError(err) {
  if (err instanceof HttpError && err.status === 401) return showLogin("session ended: log in again");
  setBanner(err.message);
}
window.addEventListener("hashchange", route);

// -- live updates (SSE) ------------------------------------------------------------------------

function listen() {
  stopListening();
  const events = new EventSource("/api/events");
  state.events = events;
  events.addEventListener("open", () => {
    state.retryMs = 1000;
    setLive(true, "live");
  });
  events.addEventListener("stats", (e) => {
    state.stats = JSON.parse(e.data);
    liveRefresh("stats");
  });
  events.addEventListener("members", () => liveRefresh("members"));
  events.addEventListener("conflicts", () => liveRefresh("conflicts"));
  events.addEventListener("error", (e) => {
    // An "error" event with data is the server's (e.g. the token was removed).
    if (e.data) setBanner(JSON.parse(e.data).error);
    events.close();
    if (state.events !== events) return;
    state.events = null;
    const wait = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, 30000);
    setLive(false, `reconnecting in ${Math.round(wait / 1000)} s`);
    state.retryTimer = setTimeout(async () => {
      // Tell a dead session (401) from a node that is away.
      try { await get("/api/me"); listen(); } catch (err) {
        if (err instanceof HttpError && err.status === 401) return showLogin("session ended: log in again");
        listen();
      }
    }, wait);
  });
}
function stopListening() {
  if (state.events) state.events.close();
  state.events = null;
  clearTimeout(state.retryTimer);
  setLive(false, "offline");
}
function setLive(on, text) {
  const live = $("live");
  live.className = `live ${on ? "on" : "off"}`;
  live.textContent = text;
  live.dataset.state = on ? "live" : "reconnecting";
}
let liveQueued = false;
function liveRefresh(kind) {
  // Coalesce bursts: one refresh per animation frame for the page on screen.
  if (liveQueued || !state.page || !state.page.live) return;
  liveQueued = true;
  requestAnimationFrame(() => {
    liveQueued = false;
    if (state.page && state.page.live) state.page.live(kind).catch(handlePageError);
  });
}

// -- Overview ------------------------------------------------------------------------------------

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
const secs = (ms) => (ms === null || ms === undefined ? "-" : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 0)} s`);

PAGES.overview = async (root, _args, page) => {
  const cards = h("div", {class: "cards", id: "cards"});
  const charts = h("div", {class: "charts"});
  const chartBoxes = {
    claims: h("section", {class: "chart"}, h("h2", {}, "Claims / s")),
    lag: h("section", {class: "chart"}, h("h2", {}, "Queue lag (s)")),
    dead: h("section", {class: "chart"}, h("h2", {}, "Dead letters")),
  };
  charts.append(chartBoxes.claims, chartBoxes.lag, chartBoxes.dead);
  const recent = h("section", {}, h("h2", {}, "Recent failures"));
  root.append(h("h1", {}, "Overview"), cards, charts, recent);
  const plots = {};
  let latency = {p95: null, p99: null, n: 0};
  let lastSamplesAt = 0;

  async function loadLatency() {
    const done = await get("/api/tasks?status=SUCCEEDED&limit=500");
    const took = done.filter((t) => t.started_at && t.finished_at)
      .map((t) => t.finished_at - t.started_at).sort((a, b) => a - b);
    latency = {p95: percentile(took, 95), p99: percentile(took, 99), n: took.length};
  }
  function renderCards(st) {
    const items = [];
    for (const [k, v] of Object.entries(st.steps)) items.push([k.toLowerCase().replace("_", " "), v, k]);
    items.push(["queue lag", secs(st.queue_lag_ms)]);
    items.push([`p95 step (${latency.n})`, secs(latency.p95)]);
    items.push([`p99 step (${latency.n})`, secs(latency.p99)]);
    for (const [k, v] of Object.entries(st.members)) items.push([`members ${k}`, v]);
    for (const [k, v] of Object.entries(st.running_by_owner_status || {})) items.push([`running on ${k.toLowerCase()} owners`, v]);
    cards.replaceChildren(...items.map(([label, value, key]) =>
      h("div", {class: "card", "data-key": key || label}, label, h("b", {}, value))));
  }
  function plot(box, key, title, data, scale) {
    const width = Math.max(260, box.clientWidth - 28);
    const xs = data.map((d) => d.at / 1000);
    const ys = data.map((d) => d[key] * (scale || 1));
    if (xs.length < 2) {
      box.replaceChildren(h("h2", {}, title), h("div", {class: "empty"}, "collecting samples (one every 10 s)…"));
      delete plots[key];
      return;
    }
    const style = getComputedStyle(document.documentElement);
    const stroke = style.getPropertyValue("--accent").trim();
    const axis = {stroke: style.getPropertyValue("--muted").trim(), grid: {stroke: style.getPropertyValue("--line").trim()}, ticks: {show: false}};
    if (plots[key] && plots[key].width === width) { plots[key].setData([xs, ys]); return; }
    box.replaceChildren(h("h2", {}, title));
    plots[key] = new uPlot({width, height: 120, legend: {show: false}, cursor: {show: false},
      axes: [axis, {...axis, size: 40}], scales: {y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
      series: [{}, {stroke, width: 2, fill: `${stroke}22`}]}, [xs, ys], box);
  }
  async function loadSamples() {
    const doc = await get("/api/samples");
    lastSamplesAt = Date.now();
    plot(chartBoxes.claims, "claims_per_s", "Claims / s", doc.samples);
    plot(chartBoxes.lag, "queue_lag_ms", "Queue lag (s)", doc.samples, 0.001);
    plot(chartBoxes.dead, "dead_letters", "Dead letters", doc.samples);
  }
  async function loadRecent() {
    const dead = await get("/api/dead?limit=8");
    recent.replaceChildren(h("h2", {}, "Recent dead letters"), table(["step", "workflow", "agent", "error", "when"],
      dead.map((d) => [d.name, h("a", {href: `#/workflow/${encodeURIComponent(d.workflow_id)}`}, shortId(d.workflow_id)),
        d.agent, h("td", {class: "wrap"}, (d.error && d.error.message) || "-"), ago(d.updated_at)])));
  }
  await loadLatency();
  renderCards(state.stats || await get("/api/stats"));
  await Promise.all([loadSamples(), loadRecent()]);
  page.live = async (kind) => {
    if (kind !== "stats") return;
    await loadLatency();
    renderCards(state.stats);
    await loadRecent();
    if (Date.now() - lastSamplesAt > 10000) await loadSamples();
  };
  const timer = setInterval(() => loadSamples().catch(() => {}), 10000);
  page.leave = () => clearInterval(timer);
};

// -- Workflows list ---------------------------------------------------------------------------------

const WORKFLOW_STATUSES = ["", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
PAGES.workflows = async (root, _args, page) => {
  const form = h("form", {class: "filters", id: "wf-filters"},
    h("label", {}, "status", h("select", {name: "status"}, WORKFLOW_STATUSES.map((v) => h("option", {value: v}, v || "any")))),
    h("label", {}, "name", h("input", {name: "name", placeholder: "exact name"})),
    h("label", {}, "since", h("input", {name: "since", type: "datetime-local"})),
    h("label", {}, "schedule", h("select", {name: "schedule"}, h("option", {value: ""}, "any"))),
    h("button", {type: "submit"}, "Filter"));
  const list = h("div", {});
  const pager = h("div", {class: "pager"});
  root.append(h("section", {}, h("h1", {}, "Workflows"), form, list, pager));
  // A schedule fires workflows named after its workflow file's name: filter by that name.
  get("/api/schedules").then((rows) => {
    for (const r of rows) form.schedule.append(h("option", {value: r.name, "data-workflow": r.workflow}, r.name));
  }).catch(() => {});
  const cursors = [null];
  let pageNo = 0;
  async function load() {
    const filters = Object.fromEntries(new FormData(form));
    const sched = form.schedule.selectedOptions[0];
    const scheduleWorkflow = sched && sched.value ? sched.dataset.workflow : "";
    const since = filters.since ? new Date(`${filters.since}Z`).getTime() : "";
    const resp = await request("GET", "/api/workflows" + qs({status: filters.status, name: filters.name || scheduleWorkflow,
      since, limit: 25, cursor: cursors[pageNo]}));
    const rows = await resp.json();
    const next = resp.headers.get("X-Next-Cursor");
    cursors[pageNo + 1] = next;
    list.replaceChildren(table(["workflow", "name", "status", "created", "updated"], rows.map((w) => [
      h("a", {href: `#/workflow/${encodeURIComponent(w.id)}`}, w.id), w.name, badge(w.status), fmtTime(w.created_at), ago(w.updated_at)])));
    pager.replaceChildren(
      h("button", {type: "button", disabled: pageNo === 0, onclick: () => { pageNo -= 1; load().catch(handlePageError); }}, "← Newer"),
      h("span", {class: "muted"}, `page ${pageNo + 1}`),
      h("button", {type: "button", disabled: !next, onclick: () => { pageNo += 1; load().catch(handlePageError); }}, "Older →"));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); cursors.length = 1; pageNo = 0; load().catch(handlePageError); });
  await load();
  page.live = async (kind) => { if (kind === "stats" && pageNo === 0) await load(); };
};

// -- one workflow: DAG and step detail ------------------------------------------------------------

const NODE_W = 170;
const NODE_H = 58;

function layoutDag(steps, rankdir) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({rankdir, nodesep: 18, ranksep: rankdir === "LR" ? 50 : 34, marginx: 10, marginy: 10});
  g.setDefaultEdgeLabel(() => ({}));
  const byName = new Map(steps.map((st) => [st.name, st]));
  for (const st of steps) g.setNode(st.id, {width: NODE_W, height: NODE_H});
  for (const st of steps) {
    for (const dep of st.depends_on) {
      const from = byName.get(dep) || steps.find((x) => x.id === dep);
      if (from) g.setEdge(from.id, st.id);
    }
  }
  dagre.layout(g);
  return g;
}
function drawDag(steps, selectedId, onSelect, narrow) {
  // Left to right on a wide screen, top to bottom on a phone (dependencies read down).
  const g = layoutDag(steps, narrow ? "TB" : "LR");
  const {width, height} = g.graph();
  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, style: `max-width: ${width}px`, role: "img", "aria-label": "workflow graph"});
  svg.append(s("defs", {}, s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"},
    s("path", {d: "M 0 0 L 10 5 L 0 10 z", class: "arrow"}))));
  for (const e of g.edges()) {
    const pts = g.edge(e).points;
    svg.append(s("path", {class: "edge", d: pts.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" "), "marker-end": "url(#arrow)"}));
  }
  for (const st of steps) {
    const n = g.node(st.id);
    const x = n.x - NODE_W / 2;
    const y = n.y - NODE_H / 2;
    const node = s("g", {class: `node n-${st.status}${st.id === selectedId ? " selected" : ""}`, "data-step": st.name,
      "data-status": st.status, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`, tabindex: 0});
    const owner = st.owner_node ? ` · ${st.owner_node}` : "";
    node.append(
      s("title", {}, `${st.name}: ${st.status}`),
      s("rect", {width: NODE_W, height: NODE_H, rx: 6}),
      s("text", {x: 10, y: 18, "font-weight": 600}, clip(st.name, 20)),
      s("text", {x: 10, y: 34, class: "sub"}, `${st.status} · ${st.attempt}/${st.max_attempts}`),
      s("text", {x: 10, y: 49, class: "sub"}, clip(`epoch ${st.lease_epoch}${owner}`, 26)));
    node.addEventListener("click", () => onSelect(st.id));
    node.addEventListener("keydown", (e) => { if (e.key === "Enter") onSelect(st.id); });
    svg.append(node);
  }
  return svg;
}
/** Workflow ids are ULIDs: the head is a timestamp shared by ids made together, so a
 * short form keeps the random tail. */
const shortId = (id) => `…${id.slice(-8)}`;
const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

PAGES.workflow = async (root, [workflowId], page) => {
  const title = h("div", {class: "title"});
  const dag = h("div", {class: "dag", id: "dag"});
  const legend = h("div", {class: "legend"}, ["PENDING", "READY", "RUNNING", "RETRY_WAIT", "SUCCEEDED", "DEAD_LETTER", "CANCELLED"].map(badge));
  const detail = h("section", {id: "step-detail"}, h("p", {class: "muted"}, "Select a step in the graph to see its input, result, error and history."));
  root.append(h("section", {}, title), h("div", {class: "wf-grid"}, h("section", {}, h("h2", {}, "Graph"), dag, legend), detail));
  let selected = null;
  let doc = null;

  async function load() {
    doc = await get(`/api/workflows/${encodeURIComponent(workflowId)}`);
    const wf = doc.workflow;
    const counts = {};
    for (const st of doc.steps) counts[st.status] = (counts[st.status] || 0) + 1;
    const unfinished = doc.steps.some((st) => !["SUCCEEDED", "DEAD_LETTER", "CANCELLED"].includes(st.status));
    title.replaceChildren(h("h1", {}, wf.name), h("span", {id: "wf-status"}, badge(wf.status)),
      h("span", {class: "muted"}, `${wf.id} · created ${fmtTime(wf.created_at)} · ` +
        Object.entries(counts).map(([k, v]) => `${v} ${k.toLowerCase()}`).join(", ")),
      h("div", {class: "actions"}, unfinished ? [
        writeButton("Cancel (soft)", {id: "cancel-soft"}, () => cancel("soft")),
        writeButton("Cancel (hard)", {id: "cancel-hard", class: "write danger"}, () => cancel("hard"))] : null));
    dag.replaceChildren(drawDag(doc.steps, selected, select, window.innerWidth < 700));
    if (selected) await renderDetail();
  }
  async function cancel(mode) {
    const text = mode === "hard"
      ? "Cancel this workflow HARD? Every unfinished step stops; running agents are killed (their leases are fenced)."
      : "Cancel this workflow softly? Steps not started yet are cancelled; running ones finish.";
    if (!(await confirmAction(text, `Cancel ${mode}`))) return;
    const res = await post("/api/cancel", {workflow_id: workflowId, mode});
    toast(`cancelled ${res.cancelled} step(s)` + (res.fenced_running.length ? `, fenced ${res.fenced_running.length} running` : ""));
    await load();
  }
  async function select(stepId) {
    selected = stepId;
    historyFor = null;
    await load();
  }
  let historyFor = null;
  let history = null;
  async function renderDetail() {
    const st = doc.steps.find((x) => x.id === selected);
    if (!st) return;
    // A finished step's history does not change: fetch it once.
    if (historyFor !== st.id || !["SUCCEEDED", "DEAD_LETTER", "CANCELLED"].includes(st.status)) {
      history = await get(`/api/steps/${encodeURIComponent(st.id)}/history`);
      historyFor = st.id;
    }
    const err = st.error || null;
    const parts = [
      h("div", {class: "title"}, h("h2", {}, st.name), badge(st.status),
        h("div", {class: "actions"}, ["DEAD_LETTER", "CANCELLED"].includes(st.status)
          ? writeButton("Replay step", {id: "replay-step", class: "write primary"}, async () => {
            if (!(await confirmAction(`Replay ${st.name}? It goes back to READY with a fresh attempt budget.`, "Replay"))) return;
            await post("/api/replay", {step_id: st.id});
            toast(`${st.name} replayed`);
            await load();
          }) : null)),
      h("dl", {class: "kv"},
        h("dt", {}, "step id"), h("dd", {}, st.id),
        h("dt", {}, "agent"), h("dd", {}, st.agent),
        h("dt", {}, "attempts"), h("dd", {id: "step-attempts"}, `${st.attempt} of ${st.max_attempts}`),
        h("dt", {}, "owner"), h("dd", {}, st.owner_node || "-"),
        h("dt", {}, "lease epoch"), h("dd", {}, st.lease_epoch),
        h("dt", {}, "lease expires"), h("dd", {}, fmtTime(st.lease_expires_at)),
        h("dt", {}, "depends on"), h("dd", {}, st.depends_on.join(", ") || "-"),
        h("dt", {}, "started"), h("dd", {}, fmtTime(st.started_at)),
        h("dt", {}, "finished"), h("dd", {}, fmtTime(st.finished_at))),
    ];
    if (err) {
      parts.push(h("h3", {}, "Last error"),
        h("p", {id: "step-error", class: "error"}, `${err.kind || "error"}: ${err.message || JSON.stringify(err)}`));
      if (err.stderr_tail) parts.push(h("h3", {}, "stderr tail"), h("pre", {id: "step-stderr"}, err.stderr_tail));
    }
    parts.push(h("h3", {}, "Input"), h("pre", {id: "step-input"}, json(st.input)),
      h("h3", {}, "Result"), h("pre", {id: "step-result"}, json(st.result)));
    parts.push(h("h3", {}, "Ownership history"), table(["at", "event", "node", "epoch"],
      history.ownership.map((e) => [fmtTime(e.at), e.event, e.node || "-", e.lease_epoch])));
    if (history.conflicts.length) {
      parts.push(h("h3", {}, "Lease conflicts"), table(["at", "node", "event", "expected", "actual"],
        history.conflicts.map((c) => [fmtTime(c.at), c.node, c.event, c.expected_epoch, c.actual_epoch ?? "-"])));
    }
    if (history.audit.length) {
      parts.push(h("h3", {}, "Audit"), table(["at", "actor", "action"],
        history.audit.map((a) => [fmtTime(a.at), a.actor, a.action])));
    }
    detail.replaceChildren(...parts);
  }
  await load();
  page.live = async (kind) => { if (kind === "stats" || kind === "conflicts") await load(); };
};

// -- Dead letters ----------------------------------------------------------------------------------

PAGES.dead = async (root, _args, page) => {
  const form = h("form", {class: "filters", id: "dead-filters"},
    h("label", {}, "agent", h("input", {name: "agent"})),
    h("label", {}, "workflow id", h("input", {name: "workflow"})),
    h("label", {}, "error kind", h("select", {name: "kind"}, ["", "permanent", "transient"].map((v) => h("option", {value: v}, v || "any")))),
    h("button", {type: "submit"}, "Filter"));
  const actions = h("div", {class: "actions"});
  const list = h("div", {});
  root.append(h("section", {}, h("h1", {}, "Dead letters"), form, actions, list));
  const chosen = new Set();
  let rows = [];
  const filters = () => Object.fromEntries(new FormData(form));

  async function replayMatching() {
    const f = filters();
    const all = await get("/api/dead" + qs({...f, limit: 10000}));
    if (!all.length) return toast("nothing matches");
    if (!(await confirmAction(`Replay all ${all.length} dead letter(s) matching this filter?`, `Replay ${all.length}`))) return;
    let replayed = 0;
    if (f.kind) {
      // replay-batch has no error-kind filter: replay the matching ids one by one.
      for (const d of all) { await post("/api/replay", {step_id: d.id}); replayed += 1; }
    } else {
      replayed = (await post("/api/replay-batch", {status: "DEAD_LETTER", agent: f.agent || undefined,
        workflow_id: f.workflow || undefined, limit: all.length})).replayed;
    }
    toast(`replayed ${replayed}`);
    await load();
  }
  async function replaySelected() {
    const ids = [...chosen];
    if (!ids.length) return toast("select rows first");
    if (!(await confirmAction(`Replay the ${ids.length} selected dead letter(s)?`, `Replay ${ids.length}`))) return;
    for (const id of ids) await post("/api/replay", {step_id: id});
    chosen.clear();
    toast(`replayed ${ids.length}`);
    await load();
  }
  async function load() {
    rows = await get("/api/dead" + qs({...filters(), limit: 500}));
    for (const id of [...chosen]) if (!rows.some((r) => r.id === id)) chosen.delete(id);
    const canWrite = state.me.can_write;
    actions.replaceChildren(h("span", {class: "muted", id: "dead-count"}, `${rows.length} shown`),
      writeButton("Replay selected", {id: "replay-selected"}, replaySelected),
      writeButton("Replay all matching", {id: "replay-all", class: "write primary"}, replayMatching));
    const headers = [canWrite ? "" : null, "step", "workflow", "agent", "kind", "error", "attempts", "when", canWrite ? "" : null].filter((x) => x !== null);
    list.replaceChildren(table(headers, rows.map((d) => {
      const cells = [];
      if (canWrite) {
        const box = h("input", {type: "checkbox", class: "write", "aria-label": `select ${d.name}`});
        box.checked = chosen.has(d.id);
        box.addEventListener("change", () => (box.checked ? chosen.add(d.id) : chosen.delete(d.id)));
        cells.push(h("td", {}, box));
      }
      cells.push(d.name, h("a", {href: `#/workflow/${encodeURIComponent(d.workflow_id)}`}, shortId(d.workflow_id)), d.agent,
        (d.error && d.error.kind) || "-", h("td", {class: "wrap"}, (d.error && d.error.message) || "-"),
        `${d.attempt}/${d.max_attempts}`, ago(d.updated_at));
      if (canWrite) {
        cells.push(h("td", {}, writeButton("Replay", {class: "write replay-one", "data-step": d.name}, async () => {
          await post("/api/replay", {step_id: d.id});
          toast(`${d.name} replayed`);
          await load();
        })));
      }
      return cells;
    }), (i) => ({"data-step": rows[i].name})));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(handlePageError); });
  await load();
  page.live = async (kind) => { if (kind === "stats") await load(); };
};

// -- Members ----------------------------------------------------------------------------------------

PAGES.members = async (root, _args, page) => {
  const list = h("div", {});
  root.append(h("section", {}, h("h1", {}, "Members"), list));
  async function load() {
    const [members, running] = await Promise.all([get("/api/members"), get("/api/tasks?status=RUNNING&limit=1000")]);
    const owned = {};
    for (const t of running) if (t.owner_node) owned[t.owner_node] = (owned[t.owner_node] || 0) + 1;
    list.replaceChildren(table(["name", "address", "status", "incarnation", "since", "http", "running steps"], members.map((m) => {
      const http = (m.metadata || {}).http;
      const since = ["DEAD", "LEFT"].includes(m.status) ? `${m.status.toLowerCase()} ${ago(m.status_changed_at)}` : fmtTime(m.status_changed_at);
      return [m.name, m.address, badge(m.status), m.incarnation, since,
        http ? h("a", {href: `http://${http}/`, rel: "noopener"}, http) : "-",
        h("a", {href: `#/workflows`}, String(owned[m.name] || 0))];
    })));
  }
  await load();
  page.live = async (kind) => { if (kind === "members" || kind === "stats") await load(); };
};

// -- Conflicts ---------------------------------------------------------------------------------------

PAGES.conflicts = async (root, _args, page) => {
  const report = h("section", {});
  const list = h("section", {});
  root.append(h("h1", {}, "Lease conflicts"), report, list);
  async function load() {
    const since = Date.now() - 3600 * 1000;
    const [rep, rows] = await Promise.all([get(`/api/conflicts?report=1&since=${since}&limit=10`), get("/api/conflicts?limit=200")]);
    const top = (title, items, key) => h("div", {}, h("h3", {}, title), table([key, "count"], items.map((i) => [i[key], i.count])));
    report.replaceChildren(h("h2", {}, `Last hour: ${rep.total} conflict(s)`),
      h("div", {class: "charts"}, top("by step", rep.by_step, "step_id"), top("by node", rep.by_node, "node"), top("by event", rep.by_event, "event")));
    list.replaceChildren(h("h2", {}, "Recent"), table(["at", "step", "node", "event", "expected epoch", "actual epoch", "actual status"],
      rows.map((c) => [fmtTime(c.at), c.step_id, c.node, c.event, c.expected_epoch, c.actual_epoch ?? "-", c.actual_status || "-"])));
  }
  await load();
  page.live = async (kind) => { if (kind === "conflicts") await load(); };
};

// -- Audit ---------------------------------------------------------------------------------------------

PAGES.audit = async (root) => {
  const form = h("form", {class: "filters", id: "audit-filters"},
    h("label", {}, "task id", h("input", {name: "task_id"})),
    h("label", {}, "action", h("input", {name: "action", placeholder: "replay, cancel, submit…"})),
    h("label", {}, "actor", h("input", {name: "actor", placeholder: "contains"})),
    h("label", {}, "from", h("input", {name: "from", type: "datetime-local"})),
    h("label", {}, "to", h("input", {name: "to", type: "datetime-local"})),
    h("button", {type: "submit"}, "Search"));
  const list = h("div", {});
  root.append(h("section", {}, h("h1", {}, "Audit"), form, list));
  async function load() {
    const f = Object.fromEntries(new FormData(form));
    const iso = (v) => (v ? new Date(`${v}Z`).getTime() : "");
    let rows = await get("/api/audit-query" + qs({task_id: f.task_id, action: f.action, from: iso(f.from), to: iso(f.to), limit: 500}));
    // The API filters by task, action and time; the actor filter is applied here.
    if (f.actor) rows = rows.filter((r) => r.actor.includes(f.actor));
    list.replaceChildren(table(["at", "actor", "action", "target", "details"], rows.map((r) =>
      [fmtTime(r.at), r.actor, r.action, r.target || "-", h("td", {class: "wrap"}, JSON.stringify(r.details))])));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(handlePageError); });
  await load();
};

// -- Schedules and settings history --------------------------------------------------------------------

PAGES.schedules = async (root) => {
  const rows = await get("/api/schedules");
  root.append(h("section", {}, h("h1", {}, "Schedules"), table(["name", "expression", "timezone", "enabled", "workflow", "next fire", "last fire", "last workflow"],
    rows.map((r) => [r.name, r.expression, r.timezone, r.enabled ? "yes" : "no", r.workflow, fmtTime(r.next_fire_at), fmtTime(r.last_fire_at),
      r.last_workflow_id ? h("a", {href: `#/workflow/${encodeURIComponent(r.last_workflow_id)}`}, shortId(r.last_workflow_id)) : "-"]))));
};
PAGES.settings = async (root) => {
  const rows = await get("/api/settings-history?limit=200");
  root.append(h("section", {}, h("h1", {}, "Settings history"),
    h("p", {class: "muted"}, "Each reload a node applied, with the names of the fields that changed (never their values)."),
    table(["at", "node", "changed fields"], rows.map((r) => [fmtTime(r.at), r.node, h("td", {class: "wrap"}, r.fields.join(", ") || "-")]))));
};

start();
