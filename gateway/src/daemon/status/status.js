// mecgw's status page: reads /metrics and /status.json every 2 s and draws what an operator
// looks at first. Every number shown carries data-metric="<series as on /metrics>", so the
// browser test can check each against /metrics. No external assets, no writes.
"use strict";

const PERIOD_MS = 2000;
const HISTORY = 300; // samples kept: 10 minutes at 2 s
const COLORS = { pass: "#4a78c2", redirect: "#2e9d5b", drop: "#d0443a", tx: "#b07cc6" };

const history = []; // {t, verdicts: {name: packets}, epsilon}

function parseMetrics(text) {
  const series = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    if (cut < 0) continue;
    const key = line.slice(0, cut);
    const value = Number(line.slice(cut + 1));
    const brace = key.indexOf("{");
    const name = brace < 0 ? key : key.slice(0, brace);
    const labels = {};
    if (brace >= 0) {
      for (const m of key.slice(brace + 1, -1).matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[m[1]] = m[2];
      }
    }
    series.set(key, { key, name, labels, value });
  }
  return series;
}

function family(series, name) {
  return [...series.values()].filter((s) => s.name === name);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toLocaleString("en-US", { maximumFractionDigits: 6 });
}

// A number cell bound to one series of /metrics.
function num(series, key, tag = "td") {
  const s = series.get(key);
  const e = el(tag, { class: "num", "data-metric": key });
  e.textContent = s ? fmt(s.value) : "–";
  return e;
}

function card(label, valueNode, state) {
  return el("div", { class: "card " + state }, el("div", { class: "label" }, label), el("div", { class: "value" }, valueNode));
}

function renderHealth(series, status) {
  const box = document.getElementById("health");
  const ready = series.get("mecgw_ready");
  const readyNode = num(series, "mecgw_ready", "span");
  const cards = [card("ready", readyNode, ready && ready.value === 1 ? "ok" : "bad")];
  const frames = family(series, "mecgw_fastpath_packets_total").reduce((a, s) => a + s.value, 0);
  cards.push(card("fast path (" + (status.datapath || "?") + ")", fmt(frames) + " frames", "ok"));
  if (status.pfcp) {
    cards.push(card("PFCP associations", num(series, "mecgw_pfcp_associations", "span"), "ok"));
  } else {
    cards.push(card("PFCP", "off ([pfcp] not configured)", "off"));
  }
  if (status.egress) {
    const storage = series.get("mecgw_egress_storage_ready");
    cards.push(card("egress storage", num(series, "mecgw_egress_storage_ready", "span"), storage && storage.value === 1 ? "ok" : "bad"));
  } else {
    cards.push(card("egress", "off ([egress] not configured)", "off"));
  }
  cards.push(card("policy", status.policy ? status.policy.slice(0, 19) + "…" : "none (nothing is released)", status.policy ? "ok" : "off"));
  if (status.readyz !== "ready") cards.push(card("/readyz", status.readyz || "?", "bad"));
  box.replaceChildren(...cards);
}

function renderVerdicts(series) {
  const body = document.querySelector("#verdicts tbody");
  body.replaceChildren(
    ...family(series, "mecgw_fastpath_packets_total").map((s) =>
      el("tr", {}, el("td", {}, s.labels.verdict), num(series, s.key), num(series, `mecgw_fastpath_bytes_total{verdict="${s.labels.verdict}"}`))
    )
  );
}

function renderRules(series) {
  const rules = family(series, "mecgw_rule_packets_total");
  const body = document.querySelector("#rules tbody");
  if (rules.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "3", class: "muted" }, "no traffic rules in force")));
  } else {
    body.replaceChildren(
      ...rules.map((s) => el("tr", {}, el("td", {}, s.labels.rule), num(series, s.key), num(series, `mecgw_rule_bytes_total{rule="${s.labels.rule}"}`)))
    );
  }
  const rows = [
    ["sessions (tables and API)", "mecgw_sessions"],
    ["rules", "mecgw_rules"],
    ["uplink frames of sessions", 'mecgw_session_packets_total{direction="uplink"}'],
    ["downlink frames of sessions", 'mecgw_session_packets_total{direction="downlink"}'],
  ];
  document.querySelector("#sessions tbody").replaceChildren(...rows.map(([label, key]) => el("tr", {}, el("th", {}, label), num(series, key))));
}

function renderPfcp(series, status) {
  const box = document.getElementById("pfcp");
  if (!status.pfcp) {
    box.replaceChildren(el("p", { class: "muted" }, "PFCP is off: add [pfcp] to the configuration for an SMF to program sessions (docs/pfcp.md)."));
    return;
  }
  const rows = [
    ["associations (SMFs)", "mecgw_pfcp_associations"],
    ["sessions", "mecgw_pfcp_sessions"],
    ["peers lost", "mecgw_pfcp_peers_lost_total"],
    ["retransmissions answered", "mecgw_pfcp_retransmissions_total"],
  ];
  const table = el("table", {}, el("tbody", {}, ...rows.map(([label, key]) => el("tr", {}, el("th", {}, label), num(series, key)))));
  const messages = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "message"), el("th", {}, "direction"), el("th", { class: "num" }, "count"))),
    el("tbody", {}, ...family(series, "mecgw_pfcp_messages_total").map((s) => el("tr", {}, el("td", {}, s.labels.message), el("td", {}, s.labels.direction), num(series, s.key)))));
  box.replaceChildren(table, messages);
}

function renderEgress(series, status) {
  const box = document.getElementById("egress");
  if (!status.egress) {
    box.replaceChildren(el("p", { class: "muted" }, "Egress is off: add [egress] to the configuration to send what the policy releases."));
    return;
  }
  const cols = [
    ["backlog (batches)", "mecgw_egress_backlog_batches"],
    ["enqueued", "mecgw_egress_enqueued_batches_total"],
    ["sent", "mecgw_egress_sent_batches_total"],
    ["refused at enqueue", "mecgw_egress_refused_at_enqueue_total"],
    ["refused at send", "mecgw_egress_refused_at_send_total"],
    ["send failures", "mecgw_egress_send_failures_total"],
  ];
  const destinations = family(series, "mecgw_egress_backlog_batches").map((s) => s.labels.destination);
  const head = el("tr", {}, el("th", {}, "destination"), ...cols.map(([label]) => el("th", { class: "num" }, label)));
  const rows = destinations.map((d) => el("tr", {}, el("td", {}, d), ...cols.map(([, name]) => num(series, `${name}{destination="${d}"}`))));
  const problems = (status.egress_problems || []).map((p) => el("li", {}, p));
  box.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)), ...(problems.length ? [el("ul", { class: "error" }, ...problems)] : []));
}

function renderBudget(series, status) {
  const box = document.getElementById("budget");
  document.getElementById("budget-chart").hidden = !status.policy;
  if (!status.policy) {
    box.replaceChildren(el("p", { class: "muted" }, "No policy: no budget is spent and nothing is released."));
    return;
  }
  const rows = ["epsilon", "delta"].map((p) =>
    el("tr", {}, el("th", {}, p), num(series, `mecgw_budget_left{param="${p}"}`), el("td", { class: "muted" }, "of"), num(series, `mecgw_budget_per_period{param="${p}"}`))
  );
  box.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "left this period"), el("th", {}, ""), el("th", { class: "num" }, "per period"))), el("tbody", {}, ...rows)));
}

function renderReloads(series, status) {
  const rows = [
    el("tr", {}, el("th", {}, "reloads accepted"), num(series, 'mecgw_reloads_total{result="ok"}')),
    el("tr", {}, el("th", {}, "reloads rejected"), num(series, 'mecgw_reloads_total{result="rejected"}')),
    el("tr", {}, el("th", {}, "last reload rejected"), num(series, "mecgw_last_reload_rejected")),
    el("tr", {}, el("th", {}, "audit head"), el("td", { id: "audit-head" }, status.audit_head || (status.egress ? "not written yet" : "egress is off"))),
  ];
  document.querySelector("#reloads tbody").replaceChildren(...rows);
}

function drawChart(canvas, seriesList, yLabel) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 36;
  ctx.clearRect(0, 0, w, h);
  const all = seriesList.flatMap((s) => s.points.map((p) => p[1]));
  const max = Math.max(1e-9, ...all);
  ctx.strokeStyle = "#d5d9e0";
  ctx.fillStyle = "#6b7385";
  ctx.font = "11px system-ui";
  ctx.beginPath(); ctx.moveTo(pad, 8); ctx.lineTo(pad, h - 16); ctx.lineTo(w - 4, h - 16); ctx.stroke();
  ctx.fillText(fmt(Number(max.toPrecision(3))), 2, 14);
  ctx.fillText(yLabel, 2, h - 4);
  // The x axis spans what is kept (10 minutes), or less while less has been seen.
  const t1 = Date.now();
  const first = Math.min(t1 - 60000, ...seriesList.flatMap((s) => s.points.map((p) => p[0])));
  const t0 = Math.max(t1 - HISTORY * PERIOD_MS, first);
  for (const s of seriesList) {
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    s.points.forEach(([t, v], i) => {
      const x = pad + ((t - t0) / (t1 - t0)) * (w - pad - 4);
      const y = h - 16 - (v / max) * (h - 28);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function renderCharts() {
  const names = new Set(history.flatMap((h) => Object.keys(h.verdicts)));
  const lines = [...names].map((name) => {
    const points = [];
    for (let i = 1; i < history.length; i++) {
      const a = history[i - 1], b = history[i];
      if (a.verdicts[name] === undefined || b.verdicts[name] === undefined) continue;
      const dt = (b.t - a.t) / 1000;
      points.push([b.t, Math.max(0, (b.verdicts[name] - a.verdicts[name]) / dt)]);
    }
    return { name, color: COLORS[name] || "#888", points };
  });
  drawChart(document.getElementById("verdict-chart"), lines, "frames/s");
  document.getElementById("verdict-legend").replaceChildren(
    ...lines.map((l) => el("span", {}, el("i", { class: "swatch v-" + (l.name in COLORS ? l.name : "other") }), l.name))
  );
  const eps = history.filter((h) => h.epsilon !== undefined).map((h) => [h.t, h.epsilon]);
  drawChart(document.getElementById("budget-chart"), [{ name: "epsilon", color: "#b07cc6", points: eps }], "ε left");
}

async function refresh() {
  try {
    const [metricsResponse, statusResponse] = await Promise.all([fetch("/metrics", { cache: "no-store" }), fetch("/status.json", { cache: "no-store" })]);
    if (!metricsResponse.ok) throw new Error("/metrics answered " + metricsResponse.status);
    if (!statusResponse.ok) throw new Error("/status.json answered " + statusResponse.status);
    const series = parseMetrics(await metricsResponse.text());
    const status = await statusResponse.json();
    const verdicts = {};
    for (const s of family(series, "mecgw_fastpath_packets_total")) verdicts[s.labels.verdict] = s.value;
    const eps = series.get('mecgw_budget_left{param="epsilon"}');
    history.push({ t: Date.now(), verdicts, epsilon: eps ? eps.value : undefined });
    if (history.length > HISTORY) history.shift();
    document.getElementById("version").textContent = "v" + status.version;
    renderHealth(series, status);
    renderVerdicts(series);
    renderRules(series);
    renderPfcp(series, status);
    renderEgress(series, status);
    renderBudget(series, status);
    renderReloads(series, status);
    renderCharts();
    const updated = document.getElementById("updated");
    updated.dataset.scrapes = String(Number(updated.dataset.scrapes) + 1);
    updated.textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    document.getElementById("error").hidden = true;
  } catch (e) {
    const box = document.getElementById("error");
    box.textContent = "Cannot read mecgw's state: " + e.message + " (is mecgw running?)";
    box.hidden = false;
  }
}

refresh();
setInterval(refresh, PERIOD_MS);
