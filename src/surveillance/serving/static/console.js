/* Market surveillance web console: shared code for index.html (the alert list)
   and alert.html (one alert). Plain ES2020 without modules; on alert.html the
   global Plotly (plotly.js) is loaded before this file.
   Data from the API only ever reaches the DOM as text (textContent / text nodes). */
"use strict";

const KEY_STORE = "surveil_api_key";       // sessionStorage: the API key
const LIST_URL_STORE = "surveil_list_url"; // sessionStorage: last list view, for "back"
const PAGE_SIZE = 50;
const ACTIONS = ["acknowledge", "assign", "escalate", "close", "reopen"];

const $ = (id) => document.getElementById(id);

/* ---------- DOM and formatting helpers ---------- */

// el("td", {class: "num"}, "text", childNode): strings become text nodes, never HTML.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c != null) node.append(c instanceof Node ? c : String(c));
  return node;
}

function badge(kind, value) {
  return el("span", { class: `badge ${kind}-${value}` }, value ?? "—");
}

// API times are ISO-8601; one without an offset is taken as UTC. JS dates keep milliseconds only.
function parseTime(iso) {
  if (!iso) return null;
  let s = String(iso).replace(/^(\d{4}-\d\d-\d\d) /, "$1T").replace(/(\.\d{3})\d+/, "$1");
  if (/T\d/.test(s) && !/(Z|[+-]\d\d:?\d\d)$/i.test(s)) s += "Z";
  const d = new Date(s);
  return isNaN(d) ? null : d;
}

// "2024-05-01 13:45:01" (UTC), with milliseconds only when there are some.
function fmtTime(iso) {
  const d = parseTime(iso);
  return d ? d.toISOString().replace("T", " ").replace(/(\.000)?Z$/, "") : iso ?? "—";
}

// Plotly has no time zones: give it UTC wall-clock strings so the axis reads UTC.
function plotTime(iso) {
  const d = parseTime(iso);
  return d ? d.toISOString().replace("T", " ").replace("Z", "") : iso;
}

function fmtNum(v) {
  if (typeof v !== "number" || !isFinite(v)) return v == null ? "—" : String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a >= 1e6) return v.toLocaleString("en-US", { maximumFractionDigits: 2 });
  if (a < 1e-4) return v.toExponential(3);
  return String(Number(v.toPrecision(6)));
}

// A details value as text: arrays joined with ", " (arrays of objects one per line),
// objects as "key: value", times and returns in a readable form.
function fmtValue(v, key = "") {
  if (v == null) return "—";
  if (typeof v === "number") {
    return /return$/.test(key) ? `${fmtNum(v)} (${(v * 100).toFixed(2)} %)` : fmtNum(v);
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) {
    if (!v.length) return "none";
    const objects = v.some((x) => x && typeof x === "object");
    return v.map((x) => fmtValue(x, key)).join(objects ? "\n" : ", ");
  }
  if (typeof v === "object") {
    return Object.entries(v).map(([k, x]) => `${k}: ${fmtValue(x, k)}`).join("; ");
  }
  if (/(_time|_at)$/.test(key)) return fmtTime(v);
  return String(v);
}

const humanize = (key) => key.replace(/_/g, " ");

// Fill a two-column table: rows are [label, value (text or node)].
function fillKeyValue(table, rows) {
  table.tBodies[0].replaceChildren(...rows.map(([k, v]) =>
    el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v))));
}

/* ---------- API access ---------- */

class ApiError extends Error {
  constructor(status, detail) {
    super(detailText(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI's 422 detail is a list of {loc, msg}; others are plain strings.
function detailText(detail) {
  if (detail == null || detail === "") return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
      return where ? `${where}: ${d.msg}` : d.msg || JSON.stringify(d);
    }).join("; ");
  }
  return JSON.stringify(detail);
}

async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { "X-API-Key": getKey() || "", Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text for errors */ }
  if (!res.ok) {
    if (res.status === 401) onUnauthorized();  // callers then ignore status 401
    throw new ApiError(res.status, data && data.detail !== undefined ? data.detail : text.slice(0, 200));
  }
  return data;
}

/* ---------- Sign-in (both pages) ---------- */

let pageStart = () => {};  // the page's loader, run after every successful sign-in
let pageStop = () => {};   // stops the page's background work (the live feed)

function getKey() { return sessionStorage.getItem(KEY_STORE); }

function showSignIn(message = "") {
  pageStop();
  $("content").hidden = true;
  $("who").textContent = "";
  $("sign-out").hidden = true;
  $("sign-in-panel").hidden = false;
  $("sign-in-message").textContent = message;
  $("api-key").focus();
}

function onUnauthorized() {
  sessionStorage.removeItem(KEY_STORE);
  showSignIn("The server did not accept this API key; sign in again.");
}

async function signIn() {
  let who;
  try {
    who = await api("/v1/whoami");
  } catch (err) {
    if (err.status !== 401) showSignIn(`Could not sign in: ${err.message}`);
    return;
  }
  $("sign-in-panel").hidden = true;
  $("content").hidden = false;
  $("who").textContent = `${who.name} (${who.role})`;
  $("sign-out").hidden = false;
  pageStart(who);
}

function setupAuth(start, stop) {
  pageStart = start;
  if (stop) pageStop = stop;
  $("sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    signIn();
  });
  $("sign-out").addEventListener("click", (ev) => {
    ev.preventDefault();
    sessionStorage.removeItem(KEY_STORE);
    showSignIn("Signed out.");
  });
  if (getKey()) signIn(); else showSignIn();
}

/* ---------- Live feed: SSE over fetch (EventSource cannot send X-API-Key) ---------- */

const LIVE_STALE_MS = 45000;  // no byte (not even a ": ping") for this long: reconnect
const LIVE_MAX_DELAY_MS = 30000;

function startLive(onAlert, onState) {
  let stopped = false;
  let lastId = null;
  let baseDelay = 1000;  // the server may change it with "retry:"
  let delay = baseDelay;
  let ctrl = null;

  // One SSE frame (the lines between blank lines).
  function dispatch(frame) {
    let event = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;  // comments are heartbeats
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) lastId = value;
      else if (field === "retry" && /^\d+$/.test(value)) baseDelay = delay = Number(value);
    }
    if (event !== "alert" || !data.length) return;
    try {
      onAlert(JSON.parse(data.join("\n")));
    } catch (err) {
      console.warn("live feed: bad alert frame", err);
    }
  }

  async function connectOnce() {
    ctrl = new AbortController();
    const headers = { "X-API-Key": getKey() || "", Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    let watchdog = null;
    const kick = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => ctrl.abort(), LIVE_STALE_MS);
    };
    try {
      kick();
      const res = await fetch("/v1/alerts/live", { headers, signal: ctrl.signal, cache: "no-store" });
      if (res.status === 401) { stopped = true; onUnauthorized(); return; }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      onState(true);
      delay = baseDelay;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        kick();
        // Lines may end in CRLF, LF or CR. A CR at the very end is held back:
        // its LF may come in the next chunk.
        buf = (buf + decoder.decode(value, { stream: true })).replace(/\r\n|\r(?!$)/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          dispatch(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
        }
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await connectOnce();
      } catch (err) {
        if (!stopped) console.warn("live feed:", err.message || err);
      }
      if (stopped) break;
      onState(false);
      // Backoff with jitter, so many consoles do not reconnect in step.
      await new Promise((r) => setTimeout(r, delay * (0.75 + Math.random() / 2)));
      delay = Math.min(delay * 2, LIVE_MAX_DELAY_MS);
    }
  })();

  return {
    stop() {
      stopped = true;
      if (ctrl) ctrl.abort();
      onState(false);
    },
  };
}

/* ---------- index.html: the alert list ---------- */

const FILTER_KEYS = ["symbol", "rule", "severity", "confidence", "status", "since", "until"];
const list = { filters: {}, cursor: null, shown: new Set(), generation: 0, live: null, liveAdded: 0 };

// datetime-local values have no zone; the console treats them as UTC.
const inputToIso = (v) => (v ? (v.length === 16 ? `${v}:00` : v) + "Z" : "");

function isoToInput(iso) {
  const d = parseTime(iso);
  if (!d) return "";
  const s = d.toISOString().slice(0, 19);
  return s.endsWith(":00") ? s.slice(0, 16) : s;
}

function filtersFromUrl() {
  const q = new URLSearchParams(location.search);
  const f = {};
  for (const k of FILTER_KEYS) {
    const v = (q.get(k) || "").trim();
    if (v) f[k] = v;
  }
  return f;
}

function filtersFromForm() {
  const f = {};
  for (const k of FILTER_KEYS) {
    let v = $(`filter-${k}`).value.trim();
    if (k === "since" || k === "until") v = inputToIso(v);
    if (v) f[k] = v;
  }
  return f;
}

function fillFilterForm(f) {
  for (const k of FILTER_KEYS) {
    $(`filter-${k}`).value = k === "since" || k === "until" ? isoToInput(f[k]) : f[k] || "";
  }
}

const alertHref = (id) => `/alert.html?id=${encodeURIComponent(id)}`;

function alertRow(a) {
  return el("tr", { class: "alert-row", "data-alert-id": a.alert_id, tabindex: "0" },
    el("td", { class: "time" }, el("a", { href: alertHref(a.alert_id) }, fmtTime(a.event_time))),
    el("td", { class: "symbol" }, a.symbol),
    el("td", {}, a.rule),
    el("td", {}, badge("sev", a.severity)),
    el("td", {}, badge("conf", a.confidence)),
    el("td", { class: "num" }, fmtNum(a.score)),
    el("td", {}, badge("status", a.status)),
    el("td", {}, a.assignee || "—"));
}

function updateCount() {
  const n = list.shown.size;
  const tbody = $("alerts-table").tBodies[0];
  tbody.querySelector("tr.empty")?.remove();
  if (!n) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: "8" }, "No alerts match these filters.")));
  $("alert-count").textContent = `${n} alert${n === 1 ? "" : "s"} shown`
    + (list.cursor ? "; more available" : "")
    + (list.liveAdded ? ` (${list.liveAdded} arrived live)` : "");
}

async function loadAlerts(reset) {
  const gen = reset ? ++list.generation : list.generation;
  const params = new URLSearchParams({ ...list.filters, limit: String(PAGE_SIZE) });
  if (!reset && list.cursor) params.set("cursor", list.cursor);
  const tbody = $("alerts-table").tBodies[0];
  if (reset) {
    // Cleared now, not when the page arrives: live alerts prepended meanwhile stay on top.
    tbody.replaceChildren();
    list.shown.clear();
    list.cursor = null;
    list.liveAdded = 0;
  }
  $("load-more").disabled = true;
  $("list-message").textContent = "";
  $("alert-count").textContent = "Loading…";
  try {
    const page = await api(`/v1/alerts?${params}`);
    if (gen !== list.generation) return;  // the filters changed while this page loaded
    for (const a of page.alerts) {
      if (list.shown.has(a.alert_id)) continue;
      list.shown.add(a.alert_id);
      tbody.append(alertRow(a));
    }
    list.cursor = page.next_cursor || null;
  } catch (err) {
    if (gen === list.generation && err.status !== 401) {
      $("list-message").textContent = `Could not load alerts: ${err.message}`;
    }
  } finally {
    if (gen === list.generation) {
      $("load-more").disabled = false;
      $("load-more").hidden = !list.cursor;
      updateCount();
    }
  }
}

// Apply the form (push = user action, recorded in history) or the URL (page load, back/forward).
function applyFilters(push) {
  list.filters = push ? filtersFromForm() : filtersFromUrl();
  if (push) {
    const qs = new URLSearchParams(list.filters).toString();
    history.pushState(null, "", qs ? `?${qs}` : location.pathname);
  }
  sessionStorage.setItem(LIST_URL_STORE, location.pathname + location.search);
  loadAlerts(true);
}

// Does a live alert belong in the current view? (since/until apply to event_time.)
function matchesFilters(a, f) {
  for (const k of ["symbol", "rule", "severity", "confidence", "status"]) {
    if (f[k] && a[k] !== f[k]) return false;
  }
  const t = parseTime(a.event_time);
  if (f.since && parseTime(f.since) && !(t >= parseTime(f.since))) return false;
  if (f.until && parseTime(f.until) && !(t <= parseTime(f.until))) return false;
  return true;
}

function onLiveAlert(a) {
  if (!a || !a.alert_id || list.shown.has(a.alert_id) || !matchesFilters(a, list.filters)) return;
  list.shown.add(a.alert_id);
  list.liveAdded += 1;
  const row = alertRow(a);
  row.classList.add("new");
  $("alerts-table").tBodies[0].prepend(row);
  setTimeout(() => row.classList.remove("new"), 6000);
  updateCount();
}

function setLiveState(connected) {
  const s = $("live-status");
  s.textContent = connected ? "live" : "reconnecting…";
  s.classList.toggle("connected", connected);
}

async function loadSymbols() {
  try {
    const { symbols } = await api("/v1/symbols");
    $("symbol-options").replaceChildren(...symbols.map((s) =>
      el("option", { value: s.symbol, label: `${s.symbol} (${s.alerts} alerts)` })));
  } catch (err) {
    if (err.status !== 401) console.warn("symbols:", err.message);
  }
}

function stopLive() {
  if (list.live) list.live.stop();
  list.live = null;
}

function bootList() {
  fillFilterForm(filtersFromUrl());
  $("filter-form").addEventListener("submit", (ev) => { ev.preventDefault(); applyFilters(true); });
  $("load-more").addEventListener("click", () => loadAlerts(false));
  window.addEventListener("popstate", () => { fillFilterForm(filtersFromUrl()); applyFilters(false); });

  // A row opens its alert; the link in the time cell keeps middle-click / new tab working.
  const tbody = $("alerts-table").tBodies[0];
  const open = (ev) => {
    const row = ev.target.closest("tr.alert-row");
    if (row && !ev.target.closest("a")) location.href = alertHref(row.dataset.alertId);
  };
  tbody.addEventListener("click", open);
  tbody.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(ev); });

  setupAuth(() => {
    applyFilters(false);
    loadSymbols();
    stopLive();
    list.live = startLive(onLiveAlert, setLiveState);
  }, stopLive);
}

/* ---------- alert.html: one alert ---------- */

const view = { id: null, who: null, allowed: [] };

function pageMessage(text) { $("page-message").textContent = text; }

function actionMessage(text, kind = "") {
  const m = $("action-message");
  m.textContent = text;
  m.className = `message ${kind}`;
}

function drawChart(detail) {
  const div = $("price-chart");
  if (typeof Plotly === "undefined") {
    div.textContent = "The chart library (plotly.js) did not load.";
    return;
  }
  const a = detail.alert;
  const d = a.details || {};
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const quotes = [...(detail.quotes || [])].sort((p, q) => parseTime(p.event_time) - parseTime(q.event_time));
  const x = quotes.map((q) => plotTime(q.event_time));
  const traces = [
    {
      name: "price", x, y: quotes.map((q) => q.price), mode: "lines+markers",
      line: { width: 2, color: "#1f4e9c" },
      // Late or flagged quotes stand out; the hover says why.
      marker: { size: 5, color: quotes.map((q) => (q.is_late || (q.dq_warnings || []).length ? "#e67e22" : "#1f4e9c")) },
      // Plotly reads a few tags in hover text; warnings are shown without angle brackets.
      text: quotes.map((q) => [q.is_late ? "late" : "", ...(q.dq_warnings || [])].filter(Boolean).join(", ").replace(/[<>]/g, "")),
      hovertemplate: "%{x}<br>price %{y}<br>%{text}<extra></extra>",
    },
    { name: "bid", x, y: quotes.map((q) => q.bid), mode: "lines", line: { width: 1, dash: "dot", color: "#2e8b57" } },
    { name: "ask", x, y: quotes.map((q) => q.ask), mode: "lines", line: { width: 1, dash: "dot", color: "#b8860b" } },
  ];
  if (isNum(d.previous_price)) {
    // From the previous quote (or the window's start) to the alert, at the previous price.
    const hasTime = Boolean(d.previous_event_time);
    traces.push({
      name: "previous price",
      x: [plotTime(hasTime ? d.previous_event_time : detail.window.from), plotTime(a.event_time)],
      y: [d.previous_price, d.previous_price],
      mode: "lines+markers",
      line: { width: 1.5, dash: "dash", color: "#7f7f7f" },
      marker: { size: [hasTime ? 9 : 0, 0], color: "#7f7f7f" },
    });
  }
  const own = quotes.find((q) => q.event_id === a.event_id);
  const alertPrice = isNum(d.price) ? d.price : own ? own.price : null;
  if (alertPrice != null) {
    traces.push({
      name: "alert", x: [plotTime(a.event_time)], y: [alertPrice], mode: "markers",
      marker: { size: 16, color: "#d62728", line: { width: 2, color: "#ffffff" } },
      hovertemplate: "%{x}<br>alert price %{y}<extra>alert</extra>",
    });
  }
  const layout = {
    margin: { t: 20, r: 20, b: 60, l: 70 },
    xaxis: { title: { text: "time (UTC)" }, type: "date" },
    yaxis: { title: { text: "price" } },
    legend: { orientation: "h", y: -0.25 },
    hovermode: "closest",
    annotations: quotes.length ? [] : [{ text: "no quotes in this window", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
  };
  Plotly.newPlot(div, traces, layout, { responsive: true, displaylogo: false })
    .then(() => { document.body.dataset.chartReady = "1"; });
}

function renderAlert(detail) {
  const a = detail.alert;
  const title = `${a.symbol} · ${a.rule} · ${fmtTime(a.event_time)} UTC`;
  $("alert-title").textContent = title;
  document.title = `${title} — Market surveillance`;

  fillKeyValue($("facts-table"), [
    ["Alert id", a.alert_id],
    ["Score", fmtNum(a.score)],
    ["Threshold", fmtNum(a.threshold)],
    ["Severity", badge("sev", a.severity)],
    ["Confidence", badge("conf", a.confidence)],
    ["Episode", a.episode_id ?? "—"],
    ["Event id", a.event_id ?? "—"],
    ["Event time", fmtTime(a.event_time)],
    ["Kafka partition / offset", `${a.source_partition ?? "—"} / ${a.source_offset ?? "—"}`],
    ["Detected at", fmtTime(a.detected_at)],
    ["Alert date", a.alert_date ?? "—"],
  ]);

  const details = a.details && typeof a.details === "object" ? a.details : {};
  const rows = Object.entries(details).map(([k, v]) => [humanize(k), fmtValue(v, k)]);
  fillKeyValue($("evidence-table"), rows.length ? rows : [["—", "no evidence recorded"]]);

  const status = $("alert-status");
  status.textContent = detail.status;
  status.className = `badge status-${detail.status}`;
  $("alert-assignee").textContent = detail.assignee || "unassigned";

  const actions = [...(detail.actions || [])].sort((p, q) => parseTime(p.acted_at) - parseTime(q.acted_at));
  $("actions-table").tBodies[0].replaceChildren(...(actions.length ? actions.map((x) => el("tr", {},
    el("td", { class: "time" }, fmtTime(x.acted_at)),
    el("td", {}, `${x.actor} (${x.role})`),
    el("td", {}, x.assignee && x.action === "assign" ? `assign → ${x.assignee}` : x.action),
    el("td", {}, `${x.status_before} → ${x.status_after}`),
    el("td", { class: "note" }, x.note || ""))) : [el("tr", { class: "empty" }, el("td", { colspan: "5" }, "No actions yet."))]));

  view.allowed = detail.allowed_actions || [];
  renderButtons();
}

// Buttons follow allowed_actions, and only an analyst may act at all.
function renderButtons(busy = false) {
  const analyst = view.who && view.who.role === "analyst";
  for (const action of ACTIONS) {
    $(`action-${action}`).disabled = busy || !analyst || !view.allowed.includes(action);
  }
  $("role-hint").textContent = !analyst
    ? `Your role (${view.who ? view.who.role : "unknown"}) can read alerts but not act on them.`
    : view.allowed.length ? "" : "No action is possible in this state.";
}

async function loadAlert(withChart) {
  if (!view.id) {
    pageMessage("No alert id: open this page as alert.html?id=<alert id>.");
    return;
  }
  const secs = $("window-seconds").value || "300";
  let detail;
  try {
    detail = await api(`/v1/alerts/${encodeURIComponent(view.id)}?window_seconds=${encodeURIComponent(secs)}`);
  } catch (err) {
    if (err.status === 401) return;
    pageMessage(err.status === 404 ? `Alert ${view.id} was not found.` : `Could not load the alert: ${err.message}`);
    renderButtons();
    return;
  }
  pageMessage("");
  renderAlert(detail);
  if (withChart) drawChart(detail);
}

async function act(action) {
  const note = $("action-note").value.trim();
  const assignee = $("action-assignee").value.trim();
  renderButtons(true);
  actionMessage("Sending…");
  try {
    // The server decides what is valid (409 transition, 422 missing note/assignee); we show its reason.
    const res = await api(`/v1/alerts/${encodeURIComponent(view.id)}/actions`, {
      method: "POST",
      body: { action, note, assignee: action === "assign" ? assignee || null : null },
    });
    $("action-note").value = "";
    $("action-assignee").value = "";
    view.allowed = res.allowed_actions || [];
    actionMessage(`Done: ${action}. Status is now ${res.status}${res.assignee ? `, assigned to ${res.assignee}` : ""}.`, "ok");
  } catch (err) {
    if (err.status === 401) return;
    actionMessage([403, 409, 422].includes(err.status) ? err.message : `The action failed: ${err.message}`, "error");
  }
  renderButtons();
  await loadAlert(false);  // fresh status, history and buttons
}

function bootAlert() {
  view.id = new URLSearchParams(location.search).get("id");
  $("back-link").href = sessionStorage.getItem(LIST_URL_STORE) || "/";
  $("action-form").addEventListener("submit", (ev) => ev.preventDefault());
  for (const action of ACTIONS) $(`action-${action}`).addEventListener("click", () => act(action));
  $("window-seconds").addEventListener("change", () => loadAlert(true));
  setupAuth((who) => {
    view.who = who;
    loadAlert(true);
  });
}

/* ---------- start ---------- */

if (document.body.dataset.page === "list") bootList();
else if (document.body.dataset.page === "alert") bootAlert();
