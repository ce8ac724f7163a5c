// The forecaster's page: a forecast form over POST /v1/forecast, and the adapters view over
// /v1/page/adapters and the public scorecards. Same-origin requests only, no libraries.
"use strict";

const COLORS = ["#1a5fb4", "#e66100", "#26a269", "#9141ac", "#865e3c", "#5e5c64"];
const SOURCES = {
  line: "read from the answer's Prediction line",
  prose: "read from the answer's analysis prose",
  probe: "answer cut off: the model's constrained choice of bin",
};

const $ = (id) => document.getElementById(id);

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// -- HTTP: one error shape ({"error": {type, message, code}}) for every 4xx/5xx ----------

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
    this.type = err.type || null;
    this.retryAfter = retryAfter;
  }
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body, response.headers.get("Retry-After"));
  return body;
}

function showError(box, err) {
  box.replaceChildren();
  if (err instanceof ApiError) {
    const what = err.status === 503 ? "The service cannot answer right now"
      : err.status === 404 ? "Not found" : err.status === 422 ? "The request was refused"
      : "The request failed";
    box.append(el("strong", `${what} (HTTP ${err.status}${err.code ? ", " + err.code : ""})`));
    box.append(el("span", err.message));
    if (err.retryAfter) box.append(el("div", `Try again in ${err.retryAfter} s.`));
  } else {
    box.append(el("strong", "The service could not be reached"), el("span", String(err)));
  }
  box.hidden = false;
}

// -- the forecast form --------------------------------------------------------------------

async function loadUniverse(day) {
  const select = $("ticker");
  const keep = select.value;
  const query = day ? `?as_of=${encodeURIComponent(day)}` : "";
  try {
    const u = await api(`/v1/universe${query}`);
    select.replaceChildren(...u.members.map((t) => el("option", t)));
    select.value = u.members.includes(keep) ? keep : u.members[0];
    const dateInput = $("as-of");
    dateInput.max = u.today;
    if (!dateInput.value) dateInput.value = u.as_of;
    $("universe-note").textContent =
      `The ${u.members.length} Dow 30 members on ${u.as_of}. The forecast is for the week ` +
      "after that date's Sunday.";
    $("error").hidden = true;
  } catch (err) {
    select.replaceChildren();
    $("universe-note").textContent = "";
    showError($("error"), err);
  }
}

function binLabel(p) {
  const dir = p.direction === "up" ? "Up" : "Down";
  const num = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));
  return p.percent_high === null ? `${dir} more than ${num(p.percent_low)}%`
    : `${dir} ${num(p.percent_low)}–${num(p.percent_high)}%`;
}

function fillList(list, text) {
  list.replaceChildren();
  const items = (text || "").split("\n").map((s) => s.replace(/^\s*\d+[.)]\s*/, "").trim())
    .filter(Boolean);
  if (!items.length) list.append(el("li", "(none)", "note"));
  for (const item of items) list.append(el("li", item));
}

function seconds(x) { return x === null || x === undefined ? "–" : `${x.toFixed(2)} s`; }

function renderForecast(r) {
  $("r-title").textContent = `${r.ticker} · ${r.company}`;
  $("r-week").textContent = `Next week: ${r.week_start} → ${r.week_end} (data up to ${r.as_of})`;
  const badge = $("r-prediction");
  if (r.prediction) {
    badge.textContent = binLabel(r.prediction);
    badge.className = `prediction ${r.prediction.direction}`;
    $("r-prediction-text").textContent =
      `“${r.prediction.text}” (bin ${r.prediction.bin}, ${SOURCES[r.prediction.source]})`;
  } else {
    badge.textContent = "No prediction";
    badge.className = "prediction none";
    $("r-prediction-text").textContent = `The answer could not be read: ${r.parse_error}`;
  }
  fillList($("r-positive"), r.positive_developments);
  fillList($("r-concerns"), r.concerns);
  $("r-analysis").textContent = r.analysis || "(none)";
  $("r-raw").textContent = r.raw_text;

  const lat = r.latency;
  const rate = lat.generation_s ? `, ${(r.generated_tokens / lat.generation_s).toFixed(1)} tokens/s` : "";
  const fresh = r.freshness.stale
    ? el("span", `stale: ${r.freshness.stale_sources.join(", ")}`, "stale")
    : el("span", "fresh", "fresh");
  const sources = Object.entries(r.freshness.sources).map(([k, v]) => `${k}: ${v}`).join(" · ");
  const rows = [
    ["Adapter", `${r.adapter} (base ${r.base}, model ${r.base_model})`],
    ["A/B arm", r.arm],
    ["Latency", `${seconds(lat.total_s)} total · first token ${seconds(lat.ttft_s)} · ` +
      `prompt ${seconds(lat.prompt_build_s)} · queue ${seconds(lat.queue_s)} · ` +
      `generation ${seconds(lat.generation_s)} (${r.generated_tokens} tokens${rate})`],
    ["Data", [fresh, document.createTextNode(sources ? ` — ${sources}` : "")]],
    ["Prompt", `${r.options.weeks} past week(s), ${r.options.news_per_week} headline(s) a week, ` +
      `${r.options.with_financials ? "with" : "without"} basic financials`],
  ];
  const meta = $("r-meta");
  meta.replaceChildren();
  for (const [name, value] of rows) {
    const dd = el("dd");
    dd.dataset.field = name.toLowerCase().replace(/[^a-z]/g, "");
    if (Array.isArray(value)) dd.append(...value); else dd.textContent = value;
    meta.append(el("dt", name), dd);
  }
  $("result").hidden = false;
}

async function submitForecast(event) {
  event.preventDefault();
  const button = $("submit");
  const body = {
    ticker: $("ticker").value,
    as_of: $("as-of").value || null,
    weeks: Number($("weeks").value),
    with_financials: $("financials").checked,
  };
  button.disabled = true;
  $("error").hidden = true;
  $("result").hidden = true;
  $("status").textContent = `Forecasting ${body.ticker}…`;
  const started = performance.now();
  try {
    const r = await api("/v1/forecast", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    renderForecast(r);
    $("status").textContent = `Answered in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
  } catch (err) {
    $("status").textContent = "";
    showError($("error"), err);
  } finally {
    button.disabled = false;
  }
}

// -- the adapters view --------------------------------------------------------------------

function renderSplit(routing) {
  const box = $("split");
  box.replaceChildren();
  if (!routing.arms.length) {
    box.append(el("p", "No A/B arms: requests go to the adapter they name.", "note"));
    return;
  }
  const bar = el("div", null, "bar");
  const legend = el("p", null, "legend");
  routing.arms.forEach((arm, i) => {
    const pct = `${(arm.share * 100).toFixed(0)}%`;
    const part = el("span", pct, `c${i % COLORS.length}`);
    part.style.flexGrow = String(Math.max(arm.share, 0.0001));
    bar.append(part);
    legend.append(el("span", `${i ? " · " : ""}arm ${arm.name} → ${arm.adapter}: ${pct}`));
  });
  box.append(bar, legend);
  const shadow = routing.shadow
    ? `Shadow: ${routing.shadow} also answers ${(routing.shadow_fraction * 100).toFixed(0)}% of requests (not returned).`
    : "No shadow arm.";
  box.append(el("p", `${shadow} Table version ${routing.version}.`, "note"));
}

const fmt = {
  pct: (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`),
  num: (x, d = 2) => (x === null || x === undefined ? "–" : x.toFixed(d)),
  s: (x) => (x === null || x === undefined ? "–" : `${x.toFixed(2)} s`),
};

function renderScorecard(name, card, summaries) {
  const box = el("div", null, "card");
  box.dataset.adapter = name;
  box.append(el("h2", name));
  const versions = new Map(card.versions.map((v) => [v.version, v]));
  const rows = [
    ["Forecasts", (v) => (v ? String(v.forecasts) : "0")],
    ["Scored weeks", (v) => (v ? String(v.scored) : "0")],
    ["Binary accuracy", (v) => (v && v.binary_accuracy !== null ? fmt.pct(v.binary_accuracy) +
      (v.binary_accuracy_ci ? ` (${fmt.pct(v.binary_accuracy_ci.low)}–${fmt.pct(v.binary_accuracy_ci.high)})` : "") : "–")],
    ["MSE (%²)", (v) => fmt.num(v && v.mse)],
    ["Parse failures", (v) => fmt.pct(v && v.parse_failure_rate)],
    ["Mean latency", (v) => fmt.s(v && v.mean_latency_s)],
    ["Mean first token", (v) => fmt.s(v && v.mean_ttft_s)],
    ["Tokens/s", (v) => fmt.num(v && v.tokens_per_s, 1)],
    ["Held-out accuracy", (_, s) => fmt.pct(s && s.evaluation.binary_accuracy)],
    ["Held-out MSE", (_, s) => fmt.num(s && s.evaluation.mse)],
  ];
  const names = [...new Set([...summaries.map((s) => s.version), ...versions.keys()])];
  const table = el("table");
  const head = el("tr");
  head.append(el("th", ""));
  for (const v of names) {
    const s = summaries.find((x) => x.version === v);
    head.append(el("th", s && s.aliases.length ? `${v} (serves ${s.aliases.join(", ")})` : v));
  }
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  for (const [label, cell] of rows) {
    const tr = el("tr");
    tr.append(el("td", label));
    for (const v of names) tr.append(el("td", cell(versions.get(v), summaries.find((x) => x.version === v))));
    table.tBodies[0].append(tr);
  }
  box.append(table);
  return box;
}

function chartPoints(summaries, cards) {
  const points = [];
  for (const s of summaries) {
    const card = (cards[s.name] || { versions: [] }).versions.find((v) => v.version === s.version);
    const realized = card && card.scored > 0 && card.binary_accuracy !== null;
    const accuracy = realized ? card.binary_accuracy : s.evaluation.binary_accuracy;
    const latency = card ? card.mean_latency_s : null;
    if (accuracy === undefined || accuracy === null || latency === null || latency === undefined) continue;
    points.push({ label: `${s.name}@${s.version}`, x: latency, y: accuracy, realized });
  }
  return points;
}

function renderChart(points) {
  const box = $("chart");
  if (!points.length) {
    box.replaceChildren(el("p", "No point yet: an adapter version appears once it has served forecasts.", "note"));
    return;
  }
  const W = 720, H = 300, L = 60, R = 220, T = 16, B = 44;
  // Ticks at a round step (1, 2 or 5 times a power of ten), four or five of them.
  const raw = (Math.max(...points.map((p) => p.x)) || 1) / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  const maxX = step * Math.ceil((Math.max(...points.map((p) => p.x)) || 1) / step + 0.25);
  const sx = (x) => L + (x / maxX) * (W - L - R);
  const sy = (y) => T + (1 - y) * (H - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="Speed vs accuracy">`;
  for (const y of [0, 0.25, 0.5, 0.75, 1]) {
    svg += `<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}"/>`;
    svg += `<text x="${L - 8}" y="${sy(y) + 4}" text-anchor="end">${y * 100}%</text>`;
  }
  for (let x = 0; x <= maxX + step / 2; x += step) {
    svg += `<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle">${x.toFixed(digits)} s</text>`;
  }
  svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${sy(0)}" y2="${sy(0)}"/>`;
  svg += `<line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${sy(0)}"/>`;
  svg += `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">mean latency per forecast (← faster)</text>`;
  svg += `<text transform="translate(14 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">binary accuracy</text>`;
  svg += `<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(0.5)}" y2="${sy(0.5)}" stroke-dasharray="4 3"/>`;
  points.forEach((p, i) => {
    const c = COLORS[i % COLORS.length];
    const fill = p.realized ? c : "#fff";
    svg += `<circle class="point" data-label="${esc(p.label)}" cx="${sx(p.x)}" cy="${sy(p.y)}" r="7" fill="${fill}" stroke="${c}" stroke-width="2.5"><title>${esc(p.label)}: ${(p.y * 100).toFixed(1)}%, ${p.x.toFixed(2)} s</title></circle>`;
    const ly = T + 14 + i * 20;
    svg += `<circle cx="${W - R + 24}" cy="${ly - 4}" r="5" fill="${fill}" stroke="${c}" stroke-width="2"/>`;
    svg += `<text x="${W - R + 36}" y="${ly}">${esc(p.label)} ${p.realized ? "" : "(held-out)"}</text>`;
  });
  svg += "</svg>";
  box.innerHTML = svg;
}

async function loadAdapters() {
  const errorBox = $("adapters-error");
  errorBox.hidden = true;
  try {
    const view = await api("/v1/page/adapters");
    renderSplit(view.routing);
    const names = [...new Set(view.adapters.map((a) => a.name))];
    const cards = {};
    await Promise.all(names.map(async (n) => {
      cards[n] = await api(`/v1/adapters/${encodeURIComponent(n)}/scorecard`);
    }));
    $("scorecards").replaceChildren(
      ...names.map((n) => renderScorecard(n, cards[n], view.adapters.filter((a) => a.name === n))),
    );
    renderChart(chartPoints(view.adapters, cards));
    document.body.dataset.adaptersLoaded = "1";
  } catch (err) {
    showError(errorBox, err);
  }
}

// -- views --------------------------------------------------------------------------------

function show() {
  const view = location.hash === "#adapters" ? "adapters" : "forecast";
  for (const name of ["forecast", "adapters"]) {
    $(`view-${name}`).hidden = name !== view;
    $(`tab-${name}`).classList.toggle("active", name === view);
  }
  if (view === "adapters") loadAdapters();
}

document.addEventListener("DOMContentLoaded", () => {
  $("forecast-form").addEventListener("submit", submitForecast);
  $("as-of").addEventListener("change", (e) => loadUniverse(e.target.value));
  window.addEventListener("hashchange", show);
  loadUniverse(null);
  show();
});
