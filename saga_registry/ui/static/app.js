// The saga view: plain DOM, no framework, no build step. Routes live in the URL's hash
// (#/, #/sagas, #/sagas/ID, #/dead-letters); the server's event stream says when the
// counts change, and the view on screen reloads then.
"use strict";

const KIND_COLOURS = { domain: "#2e7d32", failure: "#c62828", compensation: "#ef6c00", unknown: "#555" };
let overview = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function svgEl(tag, attrs = {}, text = null) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function notes(target, list) {
  target.replaceChildren(...(list || []).map((n) => el("div", { class: "note", text: n })));
}

// ----------------------------------------------------------------- routing

function route() {
  const hash = location.hash || "#/";
  const [, view, ...rest] = hash.split("/");
  let name = view || "overview";
  if (name === "sagas" && rest.length) name = "saga";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === (name === "saga" ? "sagas" : name));
  }
  if (name === "overview") showOverview();
  else if (name === "sagas") showSagas();
  else if (name === "saga") showSaga(decodeURIComponent(rest.join("/")));
  else if (name === "dead-letters") showDeadLetters();
}

function current() {
  const visible = document.querySelector(".view:not([hidden])");
  return visible ? visible.id.replace("view-", "") : "overview";
}

// ----------------------------------------------------------------- overview

function showOverview() {
  if (!overview) return;
  const c = overview.counts;
  const parts = [
    ["total", overview.total],
    ["in-flight", c.status["in-flight"]],
    ["stuck", c.status.stuck],
    ["parked", c.status.parked],
    ["ended", c.status.ended],
    ...Object.entries(c.outcome),
  ];
  document.getElementById("totals").replaceChildren(
    ...parts.map(([k, v]) => el("a", { class: `total s-${k}`, href: k === "total" ? "#/sagas" : `#/sagas?state=${k}`, "data-testid": `total-${k}` },
      el("b", { text: String(v) }), el("span", { text: k })))
  );
  notes(document.getElementById("notes"), overview.notes);
  const stamp = `?at=${overview.at}`;
  document.getElementById("choreography").src = `/api/diagrams/choreography.svg${stamp}`;
  document.getElementById("state-machine").src = `/api/diagrams/state-machine.svg${stamp}`;
}

// ----------------------------------------------------------------- sagas

function fillStates() {
  const select = document.getElementById("state");
  if (select.options.length > 1 || !overview) return;
  for (const status of ["stuck", "parked", "in-flight", "ended"]) select.append(el("option", { value: status, text: `status: ${status}` }));
  for (const state of overview.states) select.append(el("option", { value: state, text: `state: ${state}` }));
}

async function showSagas() {
  fillStates();
  const params = new URLSearchParams((location.hash.split("?")[1]) || "");
  const q = document.getElementById("q");
  const state = document.getElementById("state");
  if (params.has("state")) state.value = params.get("state");
  if (params.has("q")) q.value = params.get("q");
  const query = new URLSearchParams({ q: q.value, state: state.value, limit: "200" });
  let doc;
  try {
    doc = await getJSON(`/api/sagas?${query}`);
  } catch (error) {
    document.getElementById("saga-count").textContent = String(error.message);
    return;
  }
  const now = Date.now() / 1000;
  document.getElementById("saga-count").textContent = `${doc.total} saga(s); showing ${doc.shown}, stuck and parked first`;
  const rows = doc.sagas.map((s) => {
    const deadline = s.due_at === null ? "-" : s.due_at < now ? `${ago(now - s.due_at)} late` : `in ${ago(s.due_at - now)}`;
    return el("tr", { class: `s-${s.status}`, "data-saga": s.saga_id },
      el("td", {}, el("a", { href: `#/sagas/${encodeURIComponent(s.saga_id)}`, text: s.saga_id })),
      el("td", { text: s.state }),
      el("td", {}, el("span", { class: `badge s-${s.status}`, text: s.status })),
      el("td", { text: s.outcome || "-" }),
      el("td", { text: s.started_at ? `${ago(now - s.started_at)} ago` : "-" }),
      el("td", { text: ago(now - s.updated_at) }),
      el("td", { text: deadline }),
      el("td", { text: s.seen_by + (s.parked_in.length ? `; parked in ${s.parked_in.join(", ")}` : "") }));
  });
  document.querySelector("#saga-table tbody").replaceChildren(...rows);
}

document.getElementById("saga-search").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ q: document.getElementById("q").value, state: document.getElementById("state").value });
  location.hash = `#/sagas?${query}`;
});

// ----------------------------------------------------------------- one saga

async function showSaga(sagaId) {
  document.getElementById("saga-id").textContent = sagaId;
  let doc;
  try {
    doc = await getJSON(`/api/sagas/${encodeURIComponent(sagaId)}`);
  } catch (error) {
    document.getElementById("saga-state").textContent = String(error.message);
    document.getElementById("timeline").replaceChildren();
    document.querySelector("#events tbody").replaceChildren();
    return;
  }
  const badge = document.getElementById("saga-state");
  badge.textContent = doc.state + (doc.outcome ? ` (${doc.outcome})` : "");
  badge.className = `badge o-${doc.outcome || "none"}`;
  notes(document.getElementById("saga-notes"), doc.notes);
  drawTimeline(doc);
  const first = Math.min(...doc.events.map((e) => e.at).filter((a) => a !== null));
  document.querySelector("#events tbody").replaceChildren(...doc.events.map((e, i) => {
    const done = Object.entries(e.actions).filter(([, a]) => a.action !== "passed" && a.action !== "-");
    return el("tr", { "data-event": e.event_type },
      el("td", { text: String(i + 1) }),
      el("td", { text: e.offset === null ? "?" : `${e.partition}/${e.offset}` }),
      el("td", { text: e.at === null ? "" : `+${((e.at - first) * 1000).toFixed(0)}` }),
      el("td", {}, el("span", { class: `k-${e.kind}`, text: e.event_type })),
      el("td", { text: e.producer }),
      el("td", { text: `${e.before} → ${e.after}${e.note ? ` (${e.note})` : ""}` }),
      el("td", { text: done.map(([s, a]) => `${s}: ${a.action}${a.detail ? ` (${a.detail})` : ""}`).join("; ") }));
  }));
  notes(document.getElementById("pending"), doc.pending.map((p) => `pending: ${p.event_type} emitted by ${p.service}, ${p.sent ? "published" : "still in its outbox"}, not taken in yet`));
  document.getElementById("saga-path").src = `/api/sagas/${encodeURIComponent(sagaId)}/path.svg?n=${doc.events.length}`;
}

// One lane per service, one column per event in log order: the producer's dot, and in each
// lane that did something with it, what (reacted, applied, skipped, dead-lettered, held).
function drawTimeline(doc) {
  const services = overview ? overview.services : Object.keys(doc.events[0]?.actions || {});
  const lanes = [...services];
  for (const e of doc.events) if (!lanes.includes(e.producer)) lanes.push(e.producer);
  const colW = 150, laneH = 46, left = 170, top = 66;
  const width = left + colW * Math.max(doc.events.length, 1) + 20;
  const height = top + laneH * lanes.length + 10;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  lanes.forEach((lane, i) => {
    const y = top + i * laneH;
    svg.append(svgEl("rect", { x: 0, y, width, height: laneH, fill: i % 2 ? "#fafafa" : "#f1f4f8" }));
    svg.append(svgEl("text", { x: 8, y: y + laneH / 2 + 4, class: "lane" }, lane));
  });
  const first = Math.min(...doc.events.map((e) => e.at).filter((a) => a !== null));
  doc.events.forEach((e, i) => {
    const x = left + i * colW + colW / 2;
    const colour = KIND_COLOURS[e.kind] || KIND_COLOURS.unknown;
    const group = svgEl("g", { "data-testid": "timeline-event", "data-event": e.event_type });
    // Names longer than a column would run into the next one's: every other one lower.
    const nameY = i % 2 ? 32 : 16;
    group.append(svgEl("text", { x, y: nameY, "text-anchor": "middle", fill: colour, class: "event" }, `${i + 1}. ${e.event_type}`));
    const when = e.at === null ? "" : `+${((e.at - first) * 1000).toFixed(0)} ms`;
    const place = e.offset === null ? "" : `@${e.partition}/${e.offset}`;
    group.append(svgEl("text", { x, y: 50, "text-anchor": "middle", class: "when" }, `${place} ${when}`.trim()));
    const py = top + lanes.indexOf(e.producer) * laneH + laneH / 2;
    const targets = [];
    for (const [service, a] of Object.entries(e.actions)) {
      if (a.action === "passed" || a.action === "-") continue;
      targets.push([top + lanes.indexOf(service) * laneH + laneH / 2, a]);
    }
    for (const [y] of targets) group.append(svgEl("line", { x1: x, y1: py, x2: x, y2: y, stroke: colour, "stroke-width": 1.5, "stroke-dasharray": "3 2" }));
    group.append(svgEl("circle", { cx: x, cy: py, r: 6, fill: colour }, null));
    for (const [y, a] of targets) {
      const bad = a.action === "dead-lettered" || a.action === "skipped" || a.action === "held";
      const box = svgEl("g", { class: `act a-${a.action}` });
      box.append(svgEl("title", {}, `${a.action}${a.detail ? `: ${a.detail}` : ""}`));
      box.append(svgEl("rect", { x: x - 62, y: y - 11, width: 124, height: 22, rx: 6, fill: bad ? "#fff" : colour, stroke: a.action === "dead-lettered" ? "#000" : colour, "stroke-width": bad ? 2 : 1 }));
      box.append(svgEl("text", { x, y: y + 4, "text-anchor": "middle", fill: bad ? colour : "#fff" }, a.action));
      group.append(box);
    }
    svg.append(group);
  });
  document.getElementById("timeline").replaceChildren(svg);
}

// ----------------------------------------------------------------- dead letters

async function showDeadLetters() {
  let doc;
  try {
    doc = await getJSON("/api/dead-letters");
  } catch (error) {
    document.getElementById("dlq-count").textContent = String(error.message);
    return;
  }
  notes(document.getElementById("dlq-notes"), doc.notes);
  document.getElementById("dlq-count").textContent = `${doc.letters.length} dead letter(s), ${doc.letters.filter((l) => l.replayed_at !== null).length} replayed`;
  document.querySelector("#dlq-table tbody").replaceChildren(...doc.letters.map((l) => {
    const replayed = l.replayed_at === null ? "no" : l.replayed_at > 0 ? new Date(l.replayed_at * 1000).toISOString() : "yes";
    const button = el("button", { type: "button", "data-testid": "replay", text: l.replayed_at === null ? "Replay" : "Replayed",
      onclick: () => replay(l.service, l.saga_id) });
    if (l.replayed_at !== null) button.disabled = true;
    return el("tr", { "data-saga": l.saga_id, "data-service": l.service },
      el("td", { text: l.place }),
      el("td", { text: l.service }),
      el("td", {}, el("a", { href: `#/sagas/${encodeURIComponent(l.saga_id)}`, text: l.saga_id })),
      el("td", { text: l.event_type || "?" }),
      el("td", { text: String(l.attempts) }),
      el("td", { class: "error", text: l.error }),
      el("td", { text: replayed }),
      el("td", {}, button));
  }));
}

async function replay(service, sagaId) {
  const result = document.getElementById("dlq-result");
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem("saga-ui-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch("/api/dead-letters/replay", { method: "POST", headers, body: JSON.stringify({ service, saga_id: sagaId }) });
  const body = await response.json();
  if (response.status === 403 && /token/.test(body.error || "")) {
    const given = prompt("This server wants a token for replays:");
    if (given) { sessionStorage.setItem("saga-ui-token", given); return replay(service, sagaId); }
  }
  result.textContent = response.ok ? `replayed ${body.replayed.length} letter(s) of saga ${sagaId} for ${service}` : `not replayed: ${body.error}`;
  result.className = response.ok ? "result ok" : "result failed";
  showDeadLetters();
}

// ----------------------------------------------------------------- live updates

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/stream");
  source.addEventListener("overview", (event) => {
    received(JSON.parse(event.data));
    live.textContent = `live · counts of ${new Date(overview.at * 1000).toLocaleTimeString()}`;
    live.className = "live on";
  });
  source.addEventListener("problem", (event) => { live.textContent = JSON.parse(event.data); live.className = "live off"; });
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
}

// The counts changed (or came first): show them, and reload the view on screen.
function received(doc) {
    overview = doc;
    document.getElementById("title").textContent = overview.registry;
    document.title = `Sagas · ${overview.registry}`;
    const view = current();
    if (view === "overview") showOverview();
    else if (view === "sagas") showSagas();
    else if (view === "saga") showSaga(document.getElementById("saga-id").textContent);
    else if (view === "dead-letters") showDeadLetters();
}

window.addEventListener("hashchange", route);
route();
// The first counts by a plain request, not waiting for the stream to connect.
getJSON("/api/overview").then((doc) => { if (!overview) received(doc); }).catch(() => {});
connect();
