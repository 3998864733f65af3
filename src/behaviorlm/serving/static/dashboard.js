"use strict";
(function () {
  const KEY_SLOT = "behaviorlm.apiKey";
  const $ = (id) => document.getElementById(id);
  let modelLoaded = false;
  let reportsServed = [];
  let intentModel = null;
  let lookupSeq = 0;
  let lookedUp = "";

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  function detailText(body) {
    if (!body || body.detail === undefined) return "";
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {
      return body.detail.map((e) => (e.loc ? e.loc.join(".") + ": " : "") + (e.msg || "")).join("; ");
    }
    return JSON.stringify(body.detail);
  }

  function explain(status, body, response) {
    const detail = detailText(body);
    const suffix = detail ? " (" + detail + ")" : "";
    switch (status) {
      case 401: return "Invalid API key: the service did not accept it. Check the key and enter it again.";
      case 403: return "Permission denied: this API key lacks the scope needed here" + suffix + ".";
      case 404: return "Not found (HTTP 404): the service has no such resource" + suffix + ".";
      case 422: return "The service rejected the request" + suffix + ".";
      case 429: {
        const wait = response.headers.get("Retry-After");
        return "Rate limit exceeded: too many requests with this key" +
          (wait ? "; retry in " + wait + " s" : "") + ".";
      }
      default: return "Request failed with HTTP " + status + suffix + ".";
    }
  }

  function currentKey() { return sessionStorage.getItem(KEY_SLOT) || ""; }

  async function request(path, accept) {
    const headers = { "Accept": accept };
    const key = currentKey();
    if (key) headers["X-API-Key"] = key;
    let response;
    try {
      response = await fetch(path, { headers: headers, cache: "no-store", credentials: "omit" });
    } catch (err) {
      throw new ApiError("Cannot reach the service: " + err.message, 0);
    }
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (err) { body = null; }
      const error = new ApiError(explain(response.status, body, response), response.status);
      error.detail = detailText(body);
      throw error;
    }
    return response;
  }

  async function api(path) {
    const response = await request(path, "application/json");
    try { return await response.json(); } catch (err) { return null; }
  }

  // The segment map is SVG from the service. It is parsed as XML and rebuilt from these elements and
  // attributes only, so nothing in it can run or load anything, whatever the response holds.
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SVG_ELEMENTS = new Set(["svg", "g", "circle", "rect", "text", "title"]);
  const SVG_ATTRIBUTES = new Set(["viewBox", "width", "height", "role", "aria-label", "font-family",
    "font-size", "font-weight", "class", "data-segment", "x", "y", "cx", "cy", "r", "fill",
    "fill-opacity", "stroke", "stroke-width", "text-anchor", "transform"]);

  function copySvg(node) {
    const copy = document.createElementNS(SVG_NS, node.localName);
    for (const attribute of node.attributes) {
      if (!attribute.namespaceURI && SVG_ATTRIBUTES.has(attribute.name)) {
        copy.setAttribute(attribute.name, attribute.value);
      }
    }
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) {
        copy.appendChild(document.createTextNode(child.data));
      } else if (child.nodeType === Node.ELEMENT_NODE && child.namespaceURI === SVG_NS &&
                 SVG_ELEMENTS.has(child.localName)) {
        copy.appendChild(copySvg(child));
      }
    }
    return copy;
  }

  async function apiSvg(path) {
    const text = await (await request(path, "image/svg+xml")).text();
    const root = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
    if (root.namespaceURI !== SVG_NS || root.localName !== "svg" ||
        root.getElementsByTagName("parsererror").length) {
      throw new ApiError("The service sent a segment map that is not SVG.", 0);
    }
    return copySvg(root);
  }

  function showError(message) { $("error").textContent = message; }
  function clearError() { $("error").textContent = ""; }

  // ------------------------------------------------------------------ formatting
  function count(n) { return Number(n).toLocaleString("en-US"); }
  function plural(n, word) { return count(n) + " " + word + (n === 1 ? "" : "s"); }
  function number(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    return Number(x).toLocaleString("en-US", { maximumSignificantDigits: digits || 3 });
  }
  function short(x) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    return Number(x).toLocaleString("en-US", Math.abs(x) >= 10000
      ? { notation: "compact", maximumSignificantDigits: 3 } : { maximumSignificantDigits: 3 });
  }
  function signed(x, decimals) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    const text = Math.abs(x).toLocaleString("en-US",
      { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    return (x < 0 ? "−" : "+") + text;
  }
  function fixed(x, decimals) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    return Number(x).toLocaleString("en-US",
      { minimumFractionDigits: decimals, maximumFractionDigits: decimals }).replace("-", "−");
  }
  function percent(x, decimals) { return fixed(100 * x, decimals || 0) + "%"; }

  function formatTime(iso) {
    const when = new Date(iso);
    return isNaN(when.getTime()) ? String(iso) : when.toISOString().replace("T", " ").slice(0, 19);
  }

  function node(tag, text, cls) {
    const el = document.createElement(tag);
    if (text !== undefined && text !== null) el.textContent = text;
    if (cls) el.className = cls;
    return el;
  }

  function cell(row, text, cls) {
    const td = node("td", text, cls);
    row.appendChild(td);
    return td;
  }

  // An item as people know it: its title (the id when the catalogue has none), the id on hover.
  function itemLabel(item) {
    const span = node("span", item.title || item.item_id, item.title ? "item" : "item id");
    span.title = "item id: " + item.item_id + (item.category ? " · " + item.category : "") +
      (item.brand ? " · " + item.brand : "");
    span.dataset.itemId = item.item_id;
    return span;
  }

  function itemMeta(item) {
    return [item.category, item.brand].filter((part) => part).join(" · ");
  }

  // ------------------------------------------------------------------ colours
  const TYPE_COLOURS = new Map([["view", "#63b3ed"], ["click", "#90cdf4"], ["cart", "#ed8936"],
    ["fav", "#d53f8c"], ["purchase", "#38a169"], ["rate", "#805ad5"], ["search", "#319795"]]);
  const PALETTE = ["#3182ce", "#dd6b20", "#38a169", "#805ad5", "#e53e3e", "#319795", "#d69e2e", "#718096"];
  const extraColours = new Map();

  function typeColour(type) {
    if (TYPE_COLOURS.has(type)) return TYPE_COLOURS.get(type);
    if (!extraColours.has(type)) extraColours.set(type, PALETTE[extraColours.size % PALETTE.length]);
    return extraColours.get(type);
  }

  function legend(container, entries) {
    container.replaceChildren();
    for (const [label, colour, line] of entries) {
      const entry = node("span");
      const swatch = node("span", null, line ? "swatch line" : "swatch");
      swatch.style.background = colour;
      entry.append(swatch, document.createTextNode(label));
      container.appendChild(entry);
    }
  }

  // ------------------------------------------------------------------ SVG drawing
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    if (parent) parent.appendChild(el);
    return el;
  }

  function svgText(parent, x, y, text, attrs) {
    const el = svg("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    el.textContent = text;
    return el;
  }

  function tip(el, text) { svg("title", {}, el).textContent = text; return el; }

  // Drawn at its own size (one SVG unit = one CSS pixel), narrower only where the panel is.
  function chartRoot(width, height, label) {
    return svg("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img",
      "aria-label": label });
  }

  // About five round tick values covering [lo, hi].
  function ticks(lo, hi, wanted) {
    const span = hi - lo || 1;
    const raw = span / (wanted || 4);
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }

  // A bar from zero to value on a scale of [lo, hi] (lo <= 0 <= hi), as a one-row SVG.
  function valueBar(value, lo, hi, colour, title) {
    const width = 200;
    const root = svg("svg", { viewBox: "0 0 " + width + " 16", preserveAspectRatio: "none", role: "img" });
    const x = (v) => width * (v - lo) / (hi - lo || 1);
    svg("rect", { x: 0, y: 7, width: width, height: 2, fill: "#edf0f4" }, root);
    const start = Math.min(x(0), x(value)), end = Math.max(x(0), x(value));
    svg("rect", { x: start, y: 2, width: Math.max(1.5, end - start), height: 12, rx: 2, fill: colour,
      class: "bar-value" }, root);
    if (lo < 0) svg("rect", { x: x(0) - 0.5, y: 0, width: 1, height: 16, fill: "#4a5568" }, root);
    return tip(root, title);
  }

  // ------------------------------------------------------------------ overview and anomalies
  // One labelled bar per [label, value, colour]; bars are scaled to the largest value, shown as format(value);
  // labels are set in the monospace of ids unless labelClass says otherwise.
  function renderBars(bars, entries, format, labelClass) {
    const most = Math.max(1e-12, ...entries.map((entry) => entry[1]));
    bars.replaceChildren();
    for (const [name, value, colour] of entries) {
      const row = node("div", null, "bar-row");
      const track = node("div");
      const bar = node("div", null, "bar");
      bar.style.width = (100 * value / most).toFixed(1) + "%";
      if (colour) bar.style.background = colour;
      track.appendChild(bar);
      row.append(node("span", name, labelClass === undefined ? "id" : labelClass), track,
        node("span", format(value), "count"));
      bars.appendChild(row);
    }
  }

  function renderOverview(stats) {
    const tables = stats.tables || {};
    $("stat-events").textContent = count(tables.events ?? 0);
    $("stat-users").textContent = count(stats.users ?? 0);
    $("stat-items").textContent = count(stats.items ?? 0);
    $("stat-quarantined").textContent = count(tables.quarantine ?? 0);
    const types = Object.entries(stats.event_types || {});
    renderBars($("event-types"), types.map(([type, n]) => [type, n, typeColour(type)]), count);
    if (!types.length) $("event-types").textContent = "No events stored yet.";
    const reasons = $("quarantine");
    reasons.replaceChildren();
    for (const entry of stats.quarantine_reasons || []) {
      reasons.appendChild(node("li", entry.reason + " — " + plural(entry.rows, "row")));
    }
    if (!reasons.children.length) reasons.appendChild(node("li", "none", "muted"));
    $("overview-empty").hidden = true;
    $("overview-body").hidden = false;
  }

  function resetOverview() {
    $("overview-body").hidden = true;
    $("overview-empty").hidden = false;
  }

  // A feature against all users: the grey band is their middle half (25th-75th percentile), the dark
  // tick their median, the bar runs from the median to this user's value (red when 1.5 IQR or more away).
  function reasonRow(reason) {
    const lo0 = Math.min(reason.typical_low, reason.value, reason.typical);
    const hi0 = Math.max(reason.typical_high, reason.value, reason.typical);
    const pad = (hi0 - lo0) * 0.04 || Math.max(Math.abs(hi0) * 0.1, 1);
    const lo = lo0 - pad, hi = hi0 + pad, width = 200;
    const x = (v) => width * (v - lo) / (hi - lo);
    const root = svg("svg", { viewBox: "0 0 " + width + " 10", preserveAspectRatio: "none", role: "img",
      class: "reason-chart" });
    svg("rect", { x: 0, y: 4, width: width, height: 2, fill: "#edf0f4" }, root);
    svg("rect", { x: x(reason.typical_low), y: 0, width: Math.max(2, x(reason.typical_high) - x(reason.typical_low)),
      height: 10, fill: "#cbd5e0", class: "typical-range" }, root);
    const far = Math.abs(reason.iqr_units);
    const colour = far >= 1.5 ? "#e53e3e" : far >= 0.5 ? "#ed8936" : "#a0aec0";
    const a = Math.min(x(reason.typical), x(reason.value)), b = Math.max(x(reason.typical), x(reason.value));
    svg("rect", { x: a, y: 2.5, width: Math.max(1.5, b - a), height: 5, fill: colour, class: "user-value" }, root);
    svg("rect", { x: x(reason.typical) - 0.75, y: 0, width: 1.5, height: 10, fill: "#2d3748" }, root);
    svg("rect", { x: Math.min(width - 2.5, Math.max(0, x(reason.value) - 1.25)), y: 0, width: 2.5, height: 10,
      fill: colour }, root);
    tip(root, reason.feature + ": " + number(reason.value) + "; typical users " + number(reason.typical_low) +
      " to " + number(reason.typical_high) + " (median " + number(reason.typical) + "); " +
      signed(reason.iqr_units, 1) + " IQR from the median");
    const row = node("div", null, "reason");
    row.append(node("span", reason.feature.replaceAll("_", " "), "feature"),
      node("span", short(reason.value) + " vs " + short(reason.typical_low) + "–" + short(reason.typical_high),
        "count"), root);
    return row;
  }

  function renderAnomalies(result) {
    const body = $("anomalies").querySelector("tbody");
    body.replaceChildren();
    for (const user of result.users) {
      const row = body.insertRow();
      const link = node("button", user.user_id, "link id");
      link.type = "button";
      link.addEventListener("click", () => { $("user-id").value = user.user_id; lookup(); });
      row.insertCell().appendChild(link);
      cell(row, fixed(user.score, 3), "num");
      cell(row, count(user.events), "num");
      const why = node("div", null, "rows");
      why.append(...user.reasons.map(reasonRow));
      cell(row, null, "reasons").appendChild(why);
    }
    $("anomalies-note").dataset.scored = String(result.scored_users);
  }

  async function loadAnomalies() {
    try {
      renderAnomalies(await api("/v1/anomalies?limit=10"));
    } catch (err) {
      $("anomalies").querySelector("tbody").replaceChildren();
      if (err.status !== 409) { showError(err.message); }
    }
  }

  async function loadOverview() {
    if (!currentKey()) { resetOverview(); return; }
    try {
      renderOverview(await api("/v1/stats"));
      await loadAnomalies();
      $("key-status").textContent = "Key in use (kept in this tab only).";
      clearError();
      await loadSegmentMap("");
      await loadReports();
    } catch (err) {
      resetOverview();
      if (err.status === 401) {
        sessionStorage.removeItem(KEY_SLOT);
        $("key-status").textContent = "No key in use.";
      } else {
        $("key-status").textContent = "Key kept in this tab, but the service refused this request.";
      }
      showError(err.message);
    }
  }

  // ------------------------------------------------------------------ activity and timeline
  const DAY_MS = 86400000;

  function dayNumber(iso) {
    const [y, m, d] = String(iso).split("-").map(Number);
    return Math.round(Date.UTC(y, m - 1, d) / DAY_MS);
  }

  function dayText(n) { return new Date(n * DAY_MS).toISOString().slice(0, 10); }

  // Events per day, stacked by event type; a span of more than 92 days is drawn per week, of more than
  // 92 weeks per month, so bars stay readable.
  function renderActivity(activity) {
    const chart = $("activity-chart");
    chart.replaceChildren();
    $("activity-legend").replaceChildren();
    if (!activity.days.length) return;
    const first = dayNumber(activity.days[0].day);
    const last = dayNumber(activity.days[activity.days.length - 1].day);
    const span = last - first + 1;
    const unit = span <= 92 ? "day" : span <= 7 * 92 ? "week" : "month";
    const monthOf = (n) => { const d = new Date(n * DAY_MS); return d.getUTCFullYear() * 12 + d.getUTCMonth(); };
    const bucketOf = unit === "day" ? (n) => n - first
      : unit === "week" ? (n) => Math.floor((n - first) / 7) : (n) => monthOf(n) - monthOf(first);
    const nBuckets = bucketOf(last) + 1;
    const buckets = Array.from({ length: nBuckets }, () => new Map());
    for (const day of activity.days) {
      const bucket = buckets[bucketOf(dayNumber(day.day))];
      for (const [type, n] of Object.entries(day.by_type)) bucket.set(type, (bucket.get(type) || 0) + n);
    }
    const label = (b) => {
      if (unit === "day") return dayText(first + b);
      if (unit === "week") return "week of " + dayText(first + 7 * b);
      const m = monthOf(first) + b;
      return String(Math.floor(m / 12)) + "-" + String(m % 12 + 1).padStart(2, "0");
    };
    const types = Object.keys(activity.event_types);
    const totals = buckets.map((bucket) => [...bucket.values()].reduce((a, b) => a + b, 0));
    const top = Math.max(1, ...totals);
    const yTicks = ticks(0, top, 3).filter((t) => Number.isInteger(t));
    const yMax = Math.max(top, yTicks[yTicks.length - 1] || 1);
    const W = 560, H = 190, left = 42, right = 8, topPad = 8, bottom = 34;
    const plotW = W - left - right, plotH = H - topPad - bottom;
    const root = chartRoot(W, H, "events per " + unit + " by event type");
    root.setAttribute("id", "activity-svg");
    for (const t of yTicks) {
      const y = topPad + plotH * (1 - t / yMax);
      svg("rect", { x: left, y: y, width: plotW, height: 0.6, fill: "#e2e8f0" }, root);
      svgText(root, left - 5, y + 3.5, count(t), { "text-anchor": "end" });
    }
    const slot = plotW / nBuckets;
    const barW = Math.max(1, slot > 4 ? slot - Math.min(3, slot * 0.2) : slot);
    buckets.forEach((bucket, b) => {
      let y = topPad + plotH;
      const group = svg("g", { class: "bucket", "data-events": totals[b] }, root);
      for (const type of types) {
        const n = bucket.get(type) || 0;
        if (!n) continue;
        const h = plotH * n / yMax;
        y -= h;
        tip(svg("rect", { x: left + b * slot + (slot - barW) / 2, y: y, width: barW, height: h,
          fill: typeColour(type), class: "segment" }, group),
        label(b) + ": " + plural(n, type + " event"));
      }
    });
    svg("rect", { x: left, y: topPad + plotH, width: plotW, height: 1, fill: "#a0aec0" }, root);
    const shown = nBuckets === 1 ? [0] : nBuckets === 2 ? [0, 1] : [0, Math.floor((nBuckets - 1) / 2), nBuckets - 1];
    for (const b of shown) {
      const anchor = nBuckets === 1 ? "middle" : b === 0 ? "start" : b === nBuckets - 1 ? "end" : "middle";
      const x = anchor === "start" ? left : anchor === "end" ? left + plotW : left + (b + 0.5) * slot;
      svgText(root, x, H - bottom + 16, label(b), { "text-anchor": anchor });
    }
    svgText(root, left + plotW / 2, H - 4, "events per " + unit + " (UTC), " + dayText(first) + " to " +
      dayText(last), { "text-anchor": "middle" });
    chart.appendChild(root);
    legend($("activity-legend"), Object.entries(activity.event_types)
      .map(([type, n]) => [type + " " + count(n), typeColour(type)]));
  }

  function renderTimeline(userId, events, activity) {
    $("timeline-user").textContent = "— " + userId;
    const body = $("timeline").tBodies[0];
    body.replaceChildren();
    for (const event of events.slice().reverse()) {
      const row = document.createElement("tr");
      cell(row, formatTime(event.timestamp), "time");
      const item = cell(row, null);
      item.appendChild(itemLabel(event));
      cell(row, event.category || "", "muted small");
      cell(row, event.event_type, "event-type");
      body.appendChild(row);
    }
    renderActivity(activity);
    $("timeline-details").hidden = !events.length;
    $("timeline-summary").textContent = "The " + plural(events.length, "latest event") + " as a table, newest first";
    $("timeline-note").textContent = events.length
      ? plural(activity.events, "event") + " on " + plural(activity.days.length, "day") + ", by event type."
      : "No events stored for this user.";
  }

  // ------------------------------------------------------------------ recommendations and why
  function renderRecommendations(result) {
    const list = $("recommendations");
    list.replaceChildren();
    for (const rec of result.items) {
      const item = document.createElement("li");
      item.dataset.itemId = rec.item_id;
      item.appendChild(itemLabel(rec));
      const meta = itemMeta(rec);
      if (meta) item.append(" ", node("span", meta, "item-meta"));
      item.append(" ", node("span", "score " + fixed(rec.score, 3), "score"));
      list.appendChild(item);
    }
    const skipped = result.skipped_events
      ? "; " + plural(result.skipped_events, "event") + " unknown to the model skipped"
      : "";
    $("recommendations-note").textContent = "Top " + count(result.items.length) + " from " +
      plural(result.history_events, "history event") + skipped + " (model " + result.model + ").";
  }

  function renderExplanation(why) {
    const text = $("explanation");
    text.replaceChildren("Why ", itemLabel(why), " first: how much the model's log-probability of it " +
      "falls without each of these events (nats); a longer bar means the event matters more.");
    $("explanation-heading").hidden = false;
    const rows = $("explanation-chart");
    rows.replaceChildren();
    const values = why.because.map((e) => e.effect);
    const most = Math.max(1e-9, ...values.map(Math.abs));
    const lo = Math.min(0, ...values) < 0 ? -most : 0;
    for (const e of why.because) {
      const row = node("div", null, "influence");
      const label = node("span");
      label.append(itemLabel(e), node("span", " · " + e.event_type + ", " +
        (e.events_ago === 1 ? "latest event" : count(e.events_ago) + " events ago"), "item-meta"));
      row.append(label, valueBar(e.effect, lo, most, e.effect >= 0 ? "#3182ce" : "#a0aec0",
        (e.title || e.item_id) + ": " + signed(e.effect, 3) + " nats"),
      node("span", signed(e.effect, 2), "count"));
      rows.appendChild(row);
    }
  }

  function clearExplanation() {
    $("explanation").textContent = "";
    $("explanation-chart").replaceChildren();
    $("explanation-heading").hidden = true;
  }

  // ------------------------------------------------------------------ profile
  function renderProfile(card) {
    $("profile-user").textContent = "— " + card.user_id;
    $("profile-events").textContent = count(card.events);
    $("profile-days").textContent = count(card.active_days);
    $("profile-segment").textContent = card.segment === null ? "–" : String(card.segment);
    $("profile-anomaly").textContent = card.anomaly_percentile === null
      ? "–" : percent(card.anomaly_percentile);
    $("profile-span").textContent = "First event " + formatTime(card.first_event) + ", latest " +
      formatTime(card.last_event) + " (UTC).";
    renderBars($("profile-types"),
      Object.entries(card.events_by_type).map(([type, n]) => [type, n, typeColour(type)]), count);
    renderBars($("profile-interests"), card.interests.map((i) => [i.keywords, i.share]),
      (share) => percent(share), "keywords");
    if (!card.interests.length) $("profile-interests").textContent = "No item texts to read interests from.";
    $("profile-reasons").replaceChildren(...card.anomaly_reasons.map(reasonRow));
    const unscored = card.anomaly_percentile === null;
    const unsegmented = modelLoaded && card.segment === null;
    $("profile-note").textContent = unscored || unsegmented
      ? "New since the last refresh: " + (unscored ? "no anomaly score" : "") +
        (unscored && unsegmented ? " or " : "") + (unsegmented ? "no segment" : "") + " yet."
      : "Anomaly percentile: share of users whose behaviour is less unusual.";
    $("profile-body").hidden = false;
  }

  // The intent model's answer for the user (/v1/users/{id}/intent): class probabilities as bars and, for a
  // purchase-propensity model, the features that move it most, each with its share of the log-odds.
  function renderIntent(intent) {
    $("intent-model").textContent = "— " + intent.model + ", as of the store's latest event";
    renderBars($("intent-probabilities"), Object.entries(intent.probabilities).map(([c, p]) => [c, p]),
      (p) => fixed(p, 2), "keywords");
    $("intent-reasons").replaceChildren(...intent.reasons.map((r) => node("li",
      r.label + ": " + short(r.value) + " — makes it " + (r.log_odds > 0 ? "more" : "less") +
      " likely (log-odds " + signed(r.log_odds, 2) + ")", r.log_odds > 0 ? "raises" : "lowers")));
    $("profile-intent").hidden = false;
  }

  function clearIntent() {
    $("profile-intent").hidden = true;
    $("intent-probabilities").replaceChildren();
    $("intent-reasons").replaceChildren();
  }

  // The map with userId ringed (none: no ring); seq, if given, is the lookup it belongs to, and a newer
  // lookup's map wins.
  async function loadSegmentMap(userId, seq) {
    if (!modelLoaded) {
      $("segment-map").replaceChildren();
      $("segment-map-note").textContent = "No model is loaded: segments need the model's user states.";
      return;
    }
    const query = userId ? "?user_id=" + encodeURIComponent(userId) : "";
    try {
      const map = await apiSvg("/v1/segments/map" + query);
      if (seq !== undefined && seq !== lookupSeq) return;
      $("segment-map").replaceChildren(map);
      $("segment-map-note").textContent = NOTES.map;
    } catch (err) {
      if (seq !== undefined && seq !== lookupSeq) return;
      $("segment-map").replaceChildren();
      if (err.status === 409) {
        $("segment-map-note").textContent = "No segments yet: " + err.message;
      } else {
        showError(err.message);
      }
    }
  }

  // ------------------------------------------------------------------ population reports
  // A forest plot: one row per entry (label, estimate, interval), on one shared axis with a zero line
  // and, optionally, a dashed reference line.
  function forest(entries, options) {
    const finite = (v) => v !== null && v !== undefined && isFinite(v);
    const values = [0];
    for (const e of entries) for (const v of [e.value, e.low, e.high]) if (finite(v)) values.push(v);
    if (options.reference && finite(options.reference.value)) values.push(options.reference.value);
    let lo = Math.min(...values), hi = Math.max(...values);
    const pad = (hi - lo) * 0.05 || 0.01;
    lo -= pad; hi += pad;
    const W = options.width || 560, labelW = options.labelWidth || 240, right = options.right || 70, rowH = 20, top = 6;
    const plotW = W - labelW - right;
    const H = top + rowH * entries.length + 30;
    const x = (v) => labelW + plotW * (v - lo) / (hi - lo);
    const root = chartRoot(W, H, options.label);
    const stripes = svg("g", {}, root);
    for (const t of ticks(lo, hi, 5)) {
      svg("rect", { x: x(t) - 0.3, y: top, width: 0.6, height: rowH * entries.length, fill: "#e2e8f0" }, root);
      svgText(root, x(t), top + rowH * entries.length + 13, options.tick(t), { "text-anchor": "middle" });
    }
    svg("rect", { x: x(0) - 0.6, y: top - 2, width: 1.2, height: rowH * entries.length + 4, fill: "#4a5568" }, root);
    if (options.reference && finite(options.reference.value)) {
      const rx = x(options.reference.value);
      tip(svg("line", { x1: rx, x2: rx, y1: top - 2, y2: top + rowH * entries.length + 2, stroke: "#805ad5",
        "stroke-width": 1.2, "stroke-dasharray": "4 3", class: "reference" }, root), options.reference.label);
    }
    entries.forEach((e, i) => {
      const y = top + rowH * i + rowH / 2;
      if (i % 2 === 0) svg("rect", { x: 0, y: top + rowH * i, width: W, height: rowH, fill: "#f7fafc" }, stripes);
      tip(svgText(root, labelW - 8, y + 4, e.label, { "text-anchor": "end", class: "label" }), e.label);
      const group = svg("g", { class: "estimate" }, root);
      if (finite(e.low) && finite(e.high)) {
        svg("line", { x1: x(e.low), x2: x(e.high), y1: y, y2: y, stroke: e.colour, "stroke-width": 2 }, group);
        for (const v of [e.low, e.high]) {
          svg("line", { x1: x(v), x2: x(v), y1: y - 4, y2: y + 4, stroke: e.colour, "stroke-width": 1.5 }, group);
        }
      }
      if (finite(e.value)) svg("circle", { cx: x(e.value), cy: y, r: 4, fill: e.colour }, group);
      tip(group, e.tip);
      if (e.note) svgText(root, W - right + 6, y + 4, e.note);
    });
    svgText(root, labelW + plotW / 2, H - 3, options.axis, { "text-anchor": "middle" });
    return root;
  }

  const METHOD_COLOURS = new Map();
  function methodColour(method) {
    if (!METHOD_COLOURS.has(method)) METHOD_COLOURS.set(method, PALETTE[METHOD_COLOURS.size % PALETTE.length]);
    return METHOD_COLOURS.get(method);
  }

  function renderEffects(envelope) {
    const report = envelope.report;
    const chart = $("effects-chart");
    chart.replaceChildren();
    $("effects-note").textContent = "Effect of " + report.treatment + " on " + report.outcome + " (" +
      plural(report.n_users, "user") + ", " + count(report.n_treated) + " treated; outcome rate " +
      percent(report.outcome_rate_treated, 1) + " treated, " + percent(report.outcome_rate_untreated, 1) +
      " untreated), 95% intervals. From " + envelope.file + ", written " + formatTime(envelope.modified) + " UTC.";
    const overall = report.estimates.find((e) => e.method === "aipw") || report.estimates[0];
    const reference = { value: overall.effect, label: "overall (" + overall.method + "): " + signed(overall.effect, 4) };
    const refuted = (e) => {
      if (!e.refutations.length) return "";
      const failed = e.refutations.filter((r) => !r.passed).length;
      return failed ? failed + " refutation" + (failed > 1 ? "s" : "") + " failed" : "refutations pass";
    };
    const axis = "effect of " + report.treatment + " on " + report.outcome + " (change in the outcome rate)";
    const pair = node("div", null, "pair");
    const methods = node("div");
    const bySegment = node("div");
    pair.append(methods, bySegment);
    chart.appendChild(pair);
    methods.appendChild(node("h3", "Average effect, by method"));
    methods.appendChild(forest(report.estimates.map((e) => ({
      label: e.method, value: e.effect, low: e.ci_low, high: e.ci_high, colour: methodColour(e.method),
      note: refuted(e),
      tip: e.method + ": " + signed(e.effect, 4) + " [" + signed(e.ci_low, 4) + ", " + signed(e.ci_high, 4) + "]" +
        e.refutations.map((r) => "; " + (r.passed ? "passed: " : "FAILED: ") + r.detail).join(""),
    })), { label: "average effect by method", axis: axis, tick: (t) => signed(t, 2), labelWidth: 90,
      right: 120 }));
    bySegment.appendChild(node("h3", "By segment"));
    if (report.segments.length) {
      const segmentMethods = [...new Set(report.segments.map((s) => s.method))];
      bySegment.appendChild(forest(report.segments.map((s) => ({
        label: s.segment + (segmentMethods.length > 1 ? " · " + s.method : ""), value: s.effect, low: s.ci_low,
        high: s.ci_high, colour: methodColour(s.method), note: count(s.n) + " users",
        tip: s.segment + " (" + s.method + "): " + signed(s.effect, 4) + " [" + signed(s.ci_low, 4) + ", " +
          signed(s.ci_high, 4) + "], " + plural(s.n, "user") + ", " + count(s.n_treated) + " treated",
      })), { label: "effect by segment", axis: axis, tick: (t) => signed(t, 2), reference: reference,
        labelWidth: 170, right: 80 }));
      bySegment.appendChild(node("p", "Dashed line: " + reference.label + ".", "note"));
    } else {
      bySegment.appendChild(node("p", "The report has no per-segment effects.", "note"));
    }
    for (const warning of report.warnings) chart.appendChild(node("p", "Warning: " + warning, "note"));
  }

  function renderAudit(envelope) {
    const report = envelope.report;
    const chart = $("audit-chart");
    chart.replaceChildren();
    const k = (report.protocol && report.protocol.audit_k) || 10;
    const metric = "ndcg@" + k;
    const confidence = (report.protocol && report.protocol.confidence) || 0.95;
    $("audit-note").textContent = report.model + ": NDCG@" + k + " per user group with " + percent(confidence) +
      " bootstrap intervals (split " + ((report.protocol && report.protocol.split) || "?") +
      ", full ranking). User attributes group the results only; the model never sees them. From " +
      envelope.file + ", written " + formatTime(envelope.modified) + " UTC.";
    const overall = report.metrics[metric];
    const pair = node("div", null, "pair");
    chart.appendChild(pair);
    for (const [attribute, gap] of Object.entries(report.groups)) {
      const panel = node("div");
      pair.appendChild(panel);
      panel.appendChild(node("h3", "By " + attribute));
      const groups = gap.groups.filter((g) => g.metrics[metric])
        .sort((a, b) => b.metrics[metric].estimate - a.metrics[metric].estimate);
      const small = new Set(gap.small_groups);
      panel.appendChild(forest(groups.map((g) => ({
        label: g.group + (small.has(g.group) ? " (small)" : ""), value: g.metrics[metric].estimate,
        low: g.metrics[metric].low, high: g.metrics[metric].high,
        colour: small.has(g.group) ? "#a0aec0" : "#3182ce", note: count(g.n_users) + " users",
        tip: g.group + ": NDCG@" + k + " " + fixed(g.metrics[metric].estimate, 4) + " [" +
          fixed(g.metrics[metric].low, 4) + ", " + fixed(g.metrics[metric].high, 4) + "], " + plural(g.n_users, "user"),
      })), { label: "NDCG by " + attribute, axis: "NDCG@" + k, tick: (t) => fixed(t, 2), labelWidth: 190,
        right: 80, reference: { value: overall, label: "all users: " + fixed(overall, 4) } }));
      const d = gap.gap[metric];
      if (d) {
        const p = gap.p_value[metric];
        panel.appendChild(node("p", "Gap best − worst (" + gap.best[metric] + " − " + gap.worst[metric] + "): " +
          fixed(d.estimate, 4) + " [" + fixed(d.low, 4) + ", " + fixed(d.high, 4) + "]" +
          (p === null || p === undefined ? "" : ", permutation p = " + fixed(p, 3)) + ".", "gap-line"));
      }
    }
    const pop = report.popularity;
    chart.appendChild(node("h3", "Popularity bias"));
    const numbers = node("div", null, "numbers");
    for (const [value, label] of [[fixed(pop.popularity_ratio, 2) + "×", "as popular as users' own items"],
      [fixed(pop.gini_exposure, 3), "Gini of exposure"],
      [percent(pop.longtail_share, 1), "long tail (outside " + count(pop.n_head_items) + " head items)"],
      [percent(pop.coverage, 1), "catalogue coverage@" + k]]) {
      const box = node("div");
      box.append(node("b", value), document.createTextNode(label));
      numbers.appendChild(box);
    }
    chart.appendChild(numbers);
  }

  const TARGETING_COLOURS = new Map([["propensity", "#dd6b20"], ["random", "#a0aec0"], ["true-uplift", "#2d3748"]]);

  function renderTargeting(envelope) {
    const report = envelope.report;
    const chart = $("targeting-chart");
    chart.replaceChildren();
    $("targeting-note").textContent = "Contacting the users each ordering ranks first, on " +
      plural(report.n_test, "held-out user") + " of a past campaign: treated conversions above the control rate, " +
      "per 1,000 users. Above the dashed line is better than random. From " + envelope.file + ", written " +
      formatTime(envelope.modified) + " UTC.";
    const colourOf = (name, i) => TARGETING_COLOURS.get(name) || ["#3182ce", "#38a169", "#805ad5", "#d69e2e"][i % 4];
    const values = [0];
    for (const r of report.results) for (const v of r.curve.qini_per_1000) if (v !== null) values.push(v);
    let lo = Math.min(...values), hi = Math.max(...values);
    const pad = (hi - lo) * 0.06 || 1;
    lo -= pad; hi += pad;
    const W = 560, H = 260, left = 46, right = 10, top = 8, bottom = 34;
    const plotW = W - left - right, plotH = H - top - bottom;
    const x = (f) => left + plotW * f;
    const y = (v) => top + plotH * (1 - (v - lo) / (hi - lo));
    const root = chartRoot(W, H, "Qini curves");
    root.setAttribute("id", "qini-svg");
    for (const t of ticks(lo, hi, 4)) {
      svg("rect", { x: left, y: y(t) - 0.3, width: plotW, height: 0.6, fill: t === 0 ? "#718096" : "#e2e8f0" }, root);
      svgText(root, left - 5, y(t) + 3.5, number(t, 3), { "text-anchor": "end" });
    }
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      svgText(root, x(f), top + plotH + 14, percent(f), { "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" });
    }
    const final = report.results[0].curve.qini_per_1000.at(-1) || 0;
    tip(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(final), stroke: "#4a5568", "stroke-width": 1,
      "stroke-dasharray": "5 4" }, root), "random targeting (expected)");
    report.results.forEach((r, i) => {
      const points = r.curve.fraction.map((f, j) => [f, r.curve.qini_per_1000[j]])
        .filter(([, v]) => v !== null).map(([f, v]) => x(f).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
      tip(svg("polyline", { points: points, fill: "none", stroke: colourOf(r.name, i), "stroke-width": 2,
        "stroke-dasharray": r.name === "random" ? "2 3" : "none", class: "curve" }, root),
      r.name + ": AUUC " + fixed(r.auuc, 4) + ", Qini " + fixed(r.qini, 4));
    });
    svgText(root, left + plotW / 2, H - 3, "share of users contacted, highest score first", { "text-anchor": "middle" });
    chart.appendChild(root);
    legend($("targeting-legend"), report.results.map((r, i) => [r.name, colourOf(r.name, i), true])
      .concat([["random (expected)", "#4a5568", true]]));
    const table = $("targeting-table");
    const budgets = report.results[0].budgets.map((b) => b.budget);
    const truth = report.results.some((r) => r.budgets.some((b) => b.true_incremental_per_1000 !== null));
    const head = document.createElement("tr");
    for (const [text, cls] of [["targeting", ""], ["AUUC", "num"], ["Qini", "num"]]) head.appendChild(node("th", text, cls));
    for (const b of budgets) head.appendChild(node("th", "@" + percent(b), "num"));
    if (truth) for (const b of budgets) head.appendChild(node("th", "true @" + percent(b), "num"));
    table.tHead.replaceChildren(head);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const r of report.results) {
      const row = body.insertRow();
      cell(row, r.name);
      cell(row, fixed(r.auuc, 4), "num");
      cell(row, fixed(r.qini, 4), "num");
      for (const b of r.budgets) cell(row, signed(b.incremental_per_1000, 1), "num");
      if (truth) for (const b of r.budgets) cell(row, signed(b.true_incremental_per_1000, 1), "num");
    }
    table.hidden = false;
    chart.appendChild(node("p", "Below: AUUC, Qini coefficient and extra conversions per 1,000 users when " +
      "contacting the top 10, 20, 30% (from outcomes; true: from the planted effects, where known).", "note"));
  }

  // What to run when a report is not configured (the report endpoints exist only for configured files).
  const REPORT_HINTS = {
    effects: ["No causal-effects report is configured. Write one with ",
      "behaviorlm effects --treatment cart --outcome purchase --store events.duckdb --json effects.json",
      " and name it in the service config: ", '[reports] effects = "effects.json"', "."],
    audit: ["No bias audit is configured. Write one with ",
      "behaviorlm audit model/ --store events.duckdb --json audit.json", " and name it in the service config: ",
      '[reports] audit = "audit.json"', "."],
    targeting: ["No targeting comparison is configured. Write one with ",
      "behaviorlm audience --campaign campaign.csv --out audience.csv --compare --json targeting.json",
      " and name it in the service config: ", '[reports] targeting = "targeting.json"', "."],
  };
  const REPORT_RENDERERS = { effects: renderEffects, audit: renderAudit, targeting: renderTargeting };

  function clearReport(name) {
    $(name + "-chart").replaceChildren();
    if (name === "targeting") {
      $("targeting-legend").replaceChildren();
      $("targeting-table").hidden = true;
    }
  }

  function showHint(name) {
    const note = $(name + "-note");
    note.replaceChildren(...REPORT_HINTS[name].map((part, i) => (i % 2 ? node("code", part) : part)));
    note.classList.add("hint");
  }

  async function loadReports() {
    for (const name of Object.keys(REPORT_RENDERERS)) {
      clearReport(name);
      $(name + "-note").classList.remove("hint");
      if (!reportsServed.includes(name)) { showHint(name); continue; }
      try {
        REPORT_RENDERERS[name](await api("/v1/reports/" + name));
      } catch (err) {
        clearReport(name);
        $(name + "-note").textContent = err.status === 503
          ? "The configured report cannot be shown: " + (err.detail || err.message)
          : err.message;
      }
    }
  }

  function resetReports() {
    for (const name of Object.keys(REPORT_RENDERERS)) {
      clearReport(name);
      $(name + "-note").classList.remove("hint");
      $(name + "-note").textContent = NOTES[name];
    }
  }

  // ------------------------------------------------------------------ lookup
  const NOTES = {
    timeline: $("timeline-note").textContent,
    recs: $("recommendations-note").textContent,
    profile: $("profile-note").textContent,
    map: $("segment-map-note").textContent,
    effects: $("effects-note").textContent,
    audit: $("audit-note").textContent,
    targeting: $("targeting-note").textContent,
  };

  function clearProfile() {
    clearIntent();
    $("profile-user").textContent = "";
    $("profile-body").hidden = true;
    $("profile-note").textContent = NOTES.profile;
  }

  function clearLookup() {
    $("timeline-user").textContent = "";
    $("timeline").tBodies[0].replaceChildren();
    $("timeline-details").hidden = true;
    $("activity-chart").replaceChildren();
    $("activity-legend").replaceChildren();
    $("recommendations").replaceChildren();
    clearExplanation();
    clearWords();
    $("timeline-note").textContent = NOTES.timeline;
    $("recommendations-note").textContent = NOTES.recs;
    clearProfile();
    for (const ring of $("segment-map").querySelectorAll(".highlight")) ring.remove();
  }

  function clearWords() {
    $("words").hidden = true;
    $("words-evidence").replaceChildren();
    $("words-text").textContent = "";
    $("words-status").textContent = "";
  }

  // The language model takes seconds on a CPU: it runs only when asked, for the user looked up last.
  async function explainInWords() {
    const userId = lookedUp;
    if (!userId) { showError("Look up a user first."); return; }
    const seq = lookupSeq;
    clearWords();
    $("words").hidden = false;
    $("words-status").textContent = "The language model is writing (a few seconds on a CPU) …";
    $("words-btn").disabled = true;
    try {
      const words = await api("/v1/users/" + encodeURIComponent(userId) + "/explanation/words");
      if (seq !== lookupSeq) return;
      $("words-intent").textContent = "Intent: " + words.intent;
      $("words-confidence").textContent = "(confidence " + words.confidence.toFixed(2) + ")";
      $("words-text").textContent = words.text;
      $("words-evidence").replaceChildren(...words.evidence.map((f) => node("li", "[" + f.id + "] " + f.text)));
      const claims = (status) => count(words.claims.filter((c) => c.status === status).length);
      $("words-status").textContent = (words.source === "llm"
        ? "Every sentence is rendered from the model's claims, each checked against the data: " +
          claims("verified") + " verified, " + claims("corrected") + " corrected, " + claims("dropped") + " dropped."
        : "None of the model's claims held; shown: the activity and the latest event.") +
        " " + words.llm + ", " + words.latency_s.toFixed(1) + " s.";
      clearError();
    } catch (err) {
      if (seq !== lookupSeq) return;
      clearWords();
      showError(err.message);
    } finally {
      $("words-btn").disabled = false;
    }
  }

  async function lookup() {
    const userId = $("user-id").value.trim();
    const seq = ++lookupSeq;
    if (!userId) { showError("Enter a user id to look up."); return; }
    if (!currentKey()) { showError("Enter an API key first."); return; }
    const base = "/v1/users/" + encodeURIComponent(userId);
    try {
      const timeline = await api(base + "/events?limit=__LIMIT__");
      const activity = await api(base + "/activity");
      // A user without events has no profile (the endpoint answers 404): nothing to ask for.
      const card = timeline.events.length ? await api(base + "/profile") : null;
      const recs = modelLoaded ? await api(base + "/recommendations?k=__K__") : null;
      // The intent model may read none of the user's events (404): then there is no intent to show.
      let intent = null;
      if (card && intentModel) {
        try {
          intent = await api(base + "/intent");
        } catch (err) {
          if (err.status !== 404) throw err;
        }
      }
      if (seq !== lookupSeq) return;  // a newer lookup started meanwhile: its answer wins
      renderTimeline(timeline.user_id, timeline.events, activity);
      lookedUp = userId;
      clearWords();
      if (card) {
        renderProfile(card);
        if (intent) renderIntent(intent); else clearIntent();
      } else {
        clearProfile();
        $("profile-note").textContent = "No events stored for this user: no profile.";
      }
      clearExplanation();
      if (recs) {
        renderRecommendations(recs);
        if (recs.items.length) {
          try {
            const why = await api(base + "/explanation?k=5");
            if (seq !== lookupSeq) return;
            renderExplanation(why);
          } catch (err) {
            if (err.status !== 404) { showError(err.message); }
          }
        }
      } else {
        $("recommendations").replaceChildren();
        $("recommendations-note").textContent = "No model is loaded: the service has no recommendations.";
      }
      clearError();
      await loadSegmentMap(userId, seq);
      if (seq !== lookupSeq) return;
      if (card && modelLoaded && card.segment === null) {
        $("segment-map-note").textContent = "This user is not on the map: they were not among the users " +
          "segmented at the last refresh.";
      }
    } catch (err) {
      if (seq !== lookupSeq) return;
      clearLookup();
      showError(err.message);
    }
  }

  async function loadHealth() {
    try {
      const health = await api("/v1/health");
      modelLoaded = health.model_loaded === true;
      reportsServed = Array.isArray(health.reports) ? health.reports : [];
      intentModel = health.intent_model || null;
      $("words-btn").hidden = health.explanations_in_words !== true;
      $("service").textContent = "service v" + health.version + (modelLoaded ? ", model loaded" : ", no model");
    } catch (err) {
      showError(err.message);
    }
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("api-key").value = "";
    if (!key) { showError("Enter an API key."); return; }
    sessionStorage.setItem(KEY_SLOT, key);
    loadOverview();
  });
  $("clear-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_SLOT);
    $("key-status").textContent = "No key in use.";
    resetOverview();
    clearLookup();
    resetReports();
    $("segment-map").replaceChildren();
    clearError();
  });
  $("lookup-form").addEventListener("submit", (event) => { event.preventDefault(); lookup(); });
  $("words-btn").addEventListener("click", explainInWords);

  const ready = loadHealth().then(loadOverview);
  ready.finally(() => { document.body.dataset.ready = "true"; });
})();
