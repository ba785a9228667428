// Vigil dashboard: plain JS, no dependencies, same-origin only.
// The operator token lives in sessionStorage and is sent as
// `Authorization: Bearer` on writes; no cookie carries a credential.
"use strict";

const POLL_MS = 1000;
const WINDOW_MS = 5 * 60 * 1000;
const TOKEN_KEY = "vigil.operator.token";
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showLogin() {
  const signed = token() !== "";
  $("#who").textContent = signed ? "signed in" : "read-only";
  $("#who").className = "badge " + (signed ? "operator" : "readonly");
  $("#token").hidden = signed;
  $("#login-button").hidden = signed;
  $("#logout-button").hidden = !signed;
}

function message(text, ok) {
  const m = $("#message");
  m.textContent = text;
  m.className = ok ? "ok" : "error";
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function act(name, action) {
  const headers = { "content-type": "application/json" };
  if (token()) headers["authorization"] = "Bearer " + token();
  let r, body = {};
  try {
    r = await fetch("/v1/canaries/" + encodeURIComponent(name) + "/" + action, {
      method: "POST", headers, credentials: "omit",
      // No "by": the service attributes the action to the credential's name.
      body: JSON.stringify({ comment: "from the dashboard" }),
    });
    body = await r.json().catch(() => ({}));
  } catch (e) {
    message(action + " " + name + ": " + e, false);
    return;
  }
  if (r.ok) {
    message(action + " " + name + ": " + (body.explanation || "done") + " (phase " + body.phase + ")", true);
  } else {
    message(action + " " + name + " refused (" + r.status + "): " + (body.error || "error"), false);
  }
  refresh();
}

function fmtTime(ms) { return new Date(ms).toLocaleTimeString(); }

// ---- a tiny canvas chart -------------------------------------------------

const MARK_COLORS = { rollback: "#c43", reject: "#c43", promote: "#2a7", approve: "#2a7", advance: "#57a", await_approval: "#c90", hold: "#999", start: "#57a" };

function drawChart(canvas, series, marks, t0, t1, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400, h = canvas.clientHeight || 170;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const L = 46, R = 8, T = 8, B = 18;
  let max = 0, points = 0;
  for (const s of series) for (const [, v] of s.points) if (v != null) { max = Math.max(max, v); points++; }
  if (max <= 0) max = 1;
  max *= 1.1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (w - L - R);
  const y = (v) => T + (1 - v / max) * (h - T - B);
  g.strokeStyle = "#dde"; g.fillStyle = "#667"; g.font = "10px system-ui, sans-serif"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4, yy = y(v);
    g.beginPath(); g.moveTo(L, yy); g.lineTo(w - R, yy); g.stroke();
    g.fillText(fmtNum(v) + unit, 2, yy + 3);
  }
  g.fillText(fmtTime(t0), L, h - 4);
  g.fillText(fmtTime(t1), w - R - 50, h - 4);
  const drawn = [];
  for (const m of marks) {
    if (m.t < t0 || m.t > t1) continue;
    drawn.push(m.kind);
    g.strokeStyle = MARK_COLORS[m.kind] || "#999"; g.setLineDash([3, 3]);
    g.beginPath(); g.moveTo(x(m.t), T); g.lineTo(x(m.t), h - B); g.stroke();
    g.setLineDash([]); g.fillStyle = g.strokeStyle;
    g.fillText(m.kind, Math.min(x(m.t) + 2, w - 60), h - B - 4);
  }
  let ly = T + 10;
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = 1.6; g.setLineDash(s.dash ? [5, 3] : []);
    g.beginPath();
    let pen = false;
    for (const [t, v] of s.points) {
      if (v == null) continue; // a tick without requests: join across it
      if (pen) g.lineTo(x(t), y(v)); else g.moveTo(x(t), y(v));
      pen = true;
    }
    g.stroke(); g.setLineDash([]);
    g.fillStyle = s.color; g.fillText(s.label, L + 4, ly); ly += 11;
  }
  canvas.dataset.points = String(points);
  canvas.dataset.marks = drawn.join(" ");
  canvas.dataset.t1 = String(t1);
}

function fmtNum(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

// ---- rendering -------------------------------------------------------------

const cards = new Map();

function card(name) {
  if (cards.has(name)) return cards.get(name);
  const plot = (key, title) => {
    const c = el("canvas", { "data-plot": key });
    return [el("div", { class: "plot" }, el("div", { class: "title" }, title), c), c];
  };
  const [wDiv, wC] = plot("weight", "canary weight % and live score (÷10)");
  const [rDiv, rC] = plot("rate", "request rate, req/s (canary solid, stable dashed)");
  const [eDiv, eC] = plot("errors", "failures, % of requests (errors; resets+timeouts+overflows)");
  const [lDiv, lC] = plot("latency", "latency p50 / p95 / p99, ms");
  const timeline = el("tbody");
  const head = el("h3", {}, "canary " + name + " ");
  const phase = el("span", { class: "badge phase" });
  head.append(phase);
  const root = el("div", { class: "card", id: "canary-" + name, "data-canary": name },
    head,
    el("div", { class: "plots" }, wDiv, rDiv, eDiv, lDiv),
    el("h3", {}, "Timeline"),
    el("div", { class: "timeline" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["time", "decision", "phase", "weight", "by", "reason"].map((t) => el("th", {}, t)))),
      timeline)));
  $("#details").append(root);
  const c = { root, phase, timeline, plots: { weight: wC, rate: rC, errors: eC, latency: lC } };
  cards.set(name, c);
  return c;
}

function renderCanaries(list) {
  const body = $("#canaries tbody");
  body.replaceChildren(...list.map((c) => el("tr", { "data-canary": c.name },
    el("td", {}, c.name),
    el("td", {}, c.mode),
    el("td", {}, el("span", { class: "badge phase-" + c.phase, "data-field": "phase" }, c.phase)),
    el("td", { class: "num", "data-field": "weight" }, c.canary_weight + "%"),
    el("td", { class: "num" }, c.step + " / " + c.step_count),
    el("td", {}, el("span", { class: "badge state-" + c.live_verdict.state }, c.live_verdict.state + " " + c.live_verdict.score)),
    el("td", {}, c.reason))));
  const pending = list.filter((c) => c.phase === "waiting_approval");
  const box = $("#approvals");
  if (pending.length === 0) {
    box.replaceChildren(el("p", { class: "empty" }, "none"));
  } else {
    box.replaceChildren(...pending.map((c) => {
      const approve = el("button", { class: "approve", type: "button", "data-action": "approve", "data-canary": c.name }, "Approve");
      const reject = el("button", { class: "reject", type: "button", "data-action": "reject", "data-canary": c.name }, "Reject");
      approve.addEventListener("click", () => act(c.name, "approve"));
      reject.addEventListener("click", () => act(c.name, "reject"));
      return el("div", { class: "approval", "data-canary": c.name },
        el("strong", {}, c.name), " waits at " + c.canary_weight + "% (step " + c.step + " / " + c.step_count + "): " + c.reason + " ",
        approve, " ", reject);
    }));
  }
}

function renderDetail(view, series) {
  const c = card(view.name);
  c.phase.textContent = view.phase + " · " + view.canary_weight + "%";
  c.phase.className = "badge phase phase-" + view.phase;
  const decisions = (view.decisions || []).slice().sort((a, b) => b.at_ms - a.at_ms);
  c.timeline.replaceChildren(...decisions.map((d) => el("tr", { "data-kind": d.kind },
    el("td", {}, fmtTime(d.at_ms)),
    el("td", { class: "kind-" + d.kind }, d.kind),
    el("td", {}, d.from + " → " + d.to),
    el("td", { class: "num" }, d.weight_before + "% → " + d.weight_after + "%"),
    el("td", {}, d.actor),
    el("td", { class: "reason" }, d.explanation))));
  const samples = series.samples || [];
  // The last minutes, zoomed to the data when there is less.
  const t1 = Date.now();
  const first = samples.length ? samples[0].at_ms : t1;
  const t0 = Math.max(t1 - WINDOW_MS, Math.min(first, t1 - 30000));
  const marks = decisions.map((d) => ({ t: d.at_ms, kind: d.kind }));
  const shown = samples.filter((s) => s.at_ms >= t0);
  const pts = (f) => shown.map((s) => [s.at_ms, f(s)]);
  const pct = (n, d) => (d > 0 ? (100 * n) / d : null);
  // Rates and ratios over a trailing 2 s window: sidecars report once a second, the
  // analysis may tick faster, so single ticks alternate between full and empty.
  const RATE_MS = 2000;
  const win = (f) => shown.map((s, i) => {
    let sum = 0, j = i;
    while (j >= 0 && shown[j].at_ms > s.at_ms - RATE_MS) { sum += f(shown[j]); j--; }
    return j < 0 ? null : [sum, s.at_ms - shown[j].at_ms];
  });
  const ratePts = (f) => win(f).map((w, i) => [shown[i].at_ms, w ? (w[0] * 1000) / Math.max(1, w[1]) : null]);
  const pctPts = (num, den) => {
    const a = win(num), b = win(den);
    return a.map((w, i) => [shown[i].at_ms, w && b[i] ? pct(w[0], b[i][0]) : null]);
  };
  drawChart(c.plots.weight, [
    { label: "weight %", color: "#57a", points: pts((s) => s.weight) },
    { label: "score ÷10", color: "#c43", points: pts((s) => s.score / 10) },
  ], marks, t0, t1, "");
  drawChart(c.plots.rate, [
    { label: "canary", color: "#c60", points: ratePts((s) => s.canary.requests) },
    { label: "stable", color: "#57a", dash: true, points: ratePts((s) => s.stable.requests) },
  ], marks, t0, t1, "");
  drawChart(c.plots.errors, [
    { label: "canary errors", color: "#c43", points: pctPts((s) => s.canary.errors, (s) => s.canary.requests) },
    { label: "stable errors", color: "#57a", dash: true, points: pctPts((s) => s.stable.errors, (s) => s.stable.requests) },
    { label: "canary other", color: "#a5a", points: pctPts((s) => s.canary.resets + s.canary.timeouts + s.canary.overflows, (s) => s.canary.requests) },
  ], marks, t0, t1, "%");
  drawChart(c.plots.latency, [
    { label: "canary p50", color: "#fb6", points: pts((s) => s.canary.p50_ms) },
    { label: "canary p95", color: "#e80", points: pts((s) => s.canary.p95_ms) },
    { label: "canary p99", color: "#c40", points: pts((s) => s.canary.p99_ms) },
    { label: "stable p99", color: "#57a", dash: true, points: pts((s) => s.stable.p99_ms) },
  ], marks, t0, t1, "");
}

function renderAudit(a) {
  const chain = $("#chain");
  chain.textContent = a.chain.intact ? "chain intact (" + a.chain.rows + " rows)" : "chain BROKEN at row " + a.chain.broken_at + ": " + a.chain.error;
  chain.className = "badge " + (a.chain.intact ? "intact" : "broken");
  chain.dataset.intact = String(a.chain.intact);
  $("#audit tbody").replaceChildren(...a.rows.map((r) => el("tr", { "data-action": r.action },
    el("td", { class: "num" }, r.seq), el("td", {}, fmtTime(r.ts_ms)), el("td", {}, r.actor),
    el("td", {}, r.action), el("td", {}, r.canary), el("td", {}, r.detail))));
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const { canaries } = await getJSON("/v1/canaries");
    renderCanaries(canaries);
    for (const c of canaries) {
      const [view, series] = await Promise.all([
        getJSON("/v1/canaries/" + encodeURIComponent(c.name)),
        getJSON("/v1/dashboard/series/" + encodeURIComponent(c.name)),
      ]);
      renderDetail(view, series);
    }
    renderAudit(await getJSON("/v1/audit"));
    $("#clock").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.refreshed = String(Date.now());
  } catch (e) {
    $("#clock").textContent = "update failed: " + e.message;
  } finally {
    busy = false;
  }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("#token").value.trim();
  if (!t) { message("type the operator token to sign in", false); return; }
  sessionStorage.setItem(TOKEN_KEY, t);
  $("#token").value = "";
  showLogin();
  message("signed in (this tab only); actions are attributed to the credential's name", true);
});
$("#logout-button").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
  message("signed out: read-only", true);
});

showLogin();
refresh();
setInterval(refresh, POLL_MS);
