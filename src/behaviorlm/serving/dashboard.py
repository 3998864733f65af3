"""A one-page web dashboard over the REST API: store overview, user timelines, recommendations, user
profiles and the segment map.

Why it looks like this: the page is a static, server-rendered HTML string with inline CSS and vanilla
JavaScript, so there is no front-end build, and nothing is fetched from anywhere but the service itself
(the Content-Security-Policy only allows this origin). The page holds no data and needs no server-side
auth: the user types an API key, which is kept in ``sessionStorage`` (gone when the tab closes) and sent
as ``X-API-Key`` with each ``fetch()`` to the JSON API, which enforces keys and scopes as for any client.
Every value from the API (user ids, item ids, event types, quarantine reasons) is untrusted and reaches
the page only through ``textContent``, never ``innerHTML``. The segment map comes from the service as
SVG, drawn server-side: the page parses it as XML and rebuilds it element by element from a short list
of SVG elements and attributes (no scripts, links, styles or event handlers can come through), so it is
shown inline without loosening the Content-Security-Policy.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from behaviorlm import __version__

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'"
)
"""Inline script and style are this page's own; fetch(), images and everything else: this origin only."""

TIMELINE_LIMIT = 100
"""Latest events of a user shown in the timeline (the events endpoint's default)."""

TOP_K = 10
"""Recommendations shown for a user."""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>behaviorlm dashboard</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f4f6f9; }
  header { background: #1d2430; color: #fff; padding: 10px 20px; display: flex; gap: 16px;
           align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0 16px 0 0; }
  header small { color: #aab4c3; }
  main { padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: 1fr 1fr; }
  section { background: #fff; border: 1px solid #d9dee6; border-radius: 6px; padding: 12px 16px; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  h3 { font-size: 13px; margin: 12px 0 4px; color: #4a5568; }
  form { display: flex; gap: 6px; align-items: center; margin: 0; }
  input { padding: 5px 8px; border: 1px solid #b8c0cc; border-radius: 4px; font: inherit; }
  button { padding: 5px 12px; border: 0; border-radius: 4px; background: #2b6cb0; color: #fff;
           font: inherit; cursor: pointer; }
  button.secondary { background: #718096; }
  button.link { background: none; color: #2b6cb0; padding: 0; text-decoration: underline; }
  #error { grid-column: 1 / -1; background: #fff5f5; border: 1px solid #e53e3e; color: #9b2c2c;
           padding: 8px 12px; border-radius: 6px; }
  #error:empty { display: none; }
  .numbers { display: flex; gap: 24px; }
  .numbers div { font-size: 12px; color: #4a5568; }
  .numbers b { display: block; font-size: 22px; color: #1d2430; }
  .bar-row { display: grid; grid-template-columns: 9em 1fr 6em; gap: 8px; align-items: center; margin: 2px 0; }
  .bar { background: #63b3ed; height: 12px; border-radius: 2px; min-width: 2px; }
  .count { text-align: right; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #edf0f4; }
  th { font-size: 12px; color: #4a5568; }
  ol { margin: 0; padding-left: 22px; }
  .muted { color: #718096; }
  .id { font-family: ui-monospace, monospace; word-break: break-all; }
  #segment-map svg { display: block; width: 100%; max-width: 640px; height: auto; }
</style>
</head>
<body>
<header>
  <h1>behaviorlm</h1>
  <form id="key-form" autocomplete="off">
    <label for="api-key">API key</label>
    <input id="api-key" type="password" size="36" placeholder="read-scope API key" autocomplete="off">
    <button id="save-key" type="submit">Use key</button>
    <button id="clear-key" type="button" class="secondary">Forget key</button>
  </form>
  <small id="key-status">No key in use.</small>
  <small id="service">service v__VERSION__</small>
</header>
<main>
  <div id="error" role="alert"></div>
  <section id="overview" class="wide">
    <h2>Overview</h2>
    <p id="overview-empty" class="muted">Enter an API key with the read scope to see the event store.</p>
    <div id="overview-body" hidden>
      <div class="numbers">
        <div><b id="stat-events">–</b>events</div>
        <div><b id="stat-users">–</b>users</div>
        <div><b id="stat-items">–</b>items</div>
        <div><b id="stat-quarantined">–</b>quarantined rows</div>
      </div>
      <h3>Events by type</h3>
      <div id="event-types"></div>
      <h3>Quarantine reasons</h3>
      <ul id="quarantine"></ul>
    </div>
  </section>
  <section class="wide">
    <h2>Most anomalous users</h2>
    <p id="anomalies-note" class="muted">Bots, scrapers and other non-human behaviour, scored by an isolation forest
      over behaviour features; the reasons are the features furthest from typical users.</p>
    <table id="anomalies">
      <thead><tr><th>User</th><th>Score</th><th>Events</th><th>Why</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="wide">
    <h2>User lookup</h2>
    <form id="lookup-form" autocomplete="off">
      <label for="user-id">User id</label>
      <input id="user-id" type="text" size="30" maxlength="256">
      <button id="lookup" type="submit">Look up</button>
    </form>
  </section>
  <section>
    <h2>Timeline <span id="timeline-user" class="id muted"></span></h2>
    <p id="timeline-note" class="muted">Latest events first (up to __LIMIT__).</p>
    <table id="timeline">
      <thead><tr><th>Time (UTC)</th><th>Item</th><th>Event type</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Recommendations</h2>
    <p id="recommendations-note" class="muted">Top __K__ next items from the user's latest events.</p>
    <ol id="recommendations"></ol>
    <p id="explanation" class="muted"></p>
    <button id="words-btn" type="button" class="secondary" hidden>Explain the intent in words</button>
    <div id="words" hidden>
      <p><b id="words-intent"></b> <span id="words-confidence" class="muted"></span></p>
      <p id="words-text"></p>
      <ul id="words-evidence"></ul>
      <small id="words-status" class="muted"></small>
    </div>
  </section>
  <section>
    <h2>Profile <span id="profile-user" class="id muted"></span></h2>
    <p id="profile-note" class="muted">Activity, interests and how unusual the user's behaviour is.</p>
    <div id="profile-body" hidden>
      <div class="numbers">
        <div><b id="profile-events">–</b>events</div>
        <div><b id="profile-days">–</b>active days</div>
        <div><b id="profile-segment">–</b>segment</div>
        <div><b id="profile-anomaly">–</b>anomaly percentile</div>
      </div>
      <p id="profile-span" class="muted"></p>
      <h3>Events by type</h3>
      <div id="profile-types"></div>
      <h3>Interests</h3>
      <div id="profile-interests"></div>
      <h3>Furthest from typical users</h3>
      <ul id="profile-reasons"></ul>
    </div>
  </section>
  <section>
    <h2>Segment map</h2>
    <p id="segment-map-note" class="muted">Users on the first two principal components of the model's user
      states, coloured by segment; the looked-up user is ringed.</p>
    <div id="segment-map"></div>
  </section>
</main>
<script>
"use strict";
(function () {
  const KEY_SLOT = "behaviorlm.apiKey";
  const $ = (id) => document.getElementById(id);
  let modelLoaded = false;
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
      throw new ApiError(explain(response.status, body, response), response.status);
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

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function formatTime(iso) {
    const when = new Date(iso);
    return isNaN(when.getTime()) ? String(iso) : when.toISOString().replace("T", " ").slice(0, 19);
  }

  // One labelled bar per [label, value]; bars are scaled to the largest value, shown as format(value).
  function renderBars(bars, entries, format) {
    const most = Math.max(1e-12, ...entries.map((entry) => entry[1]));
    bars.replaceChildren();
    for (const [name, value] of entries) {
      const row = document.createElement("div");
      row.className = "bar-row";
      const label = document.createElement("span");
      label.className = "id";
      label.textContent = name;
      const track = document.createElement("div");
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = (100 * value / most).toFixed(1) + "%";
      track.appendChild(bar);
      const number = document.createElement("span");
      number.className = "count";
      number.textContent = format(value);
      row.append(label, track, number);
      bars.appendChild(row);
    }
  }

  function renderOverview(stats) {
    const tables = stats.tables || {};
    $("stat-events").textContent = String(tables.events ?? 0);
    $("stat-users").textContent = String(stats.users ?? 0);
    $("stat-items").textContent = String(stats.items ?? 0);
    $("stat-quarantined").textContent = String(tables.quarantine ?? 0);
    const types = Object.entries(stats.event_types || {});
    renderBars($("event-types"), types, String);
    if (!types.length) $("event-types").textContent = "No events stored yet.";
    const reasons = $("quarantine");
    reasons.replaceChildren();
    for (const entry of stats.quarantine_reasons || []) {
      const item = document.createElement("li");
      item.textContent = entry.reason + " — " + plural(entry.rows, "row");
      reasons.appendChild(item);
    }
    if (!reasons.children.length) {
      const item = document.createElement("li");
      item.className = "muted";
      item.textContent = "none";
      reasons.appendChild(item);
    }
    $("overview-empty").hidden = true;
    $("overview-body").hidden = false;
  }

  function resetOverview() {
    $("overview-body").hidden = true;
    $("overview-empty").hidden = false;
  }

  function renderAnomalies(result) {
    const body = $("anomalies").querySelector("tbody");
    body.replaceChildren();
    for (const user of result.users) {
      const row = body.insertRow();
      const link = document.createElement("button");
      link.type = "button";
      link.className = "link id";
      link.textContent = user.user_id;
      link.addEventListener("click", () => { $("user-id").value = user.user_id; lookup(); });
      row.insertCell().appendChild(link);
      cell(row, user.score.toFixed(3));
      cell(row, String(user.events));
      cell(row, user.reasons.map((r) => r.feature + " " + r.value.toPrecision(3) + " vs " +
        r.typical.toPrecision(3)).join("; "));
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

  function renderTimeline(userId, events) {
    $("timeline-user").textContent = "— " + userId;
    const body = $("timeline").tBodies[0];
    body.replaceChildren();
    for (const event of events.slice().reverse()) {
      const row = document.createElement("tr");
      cell(row, formatTime(event.timestamp));
      cell(row, event.item_id, "id item");
      cell(row, event.event_type, "event-type");
      body.appendChild(row);
    }
    $("timeline-note").textContent = events.length
      ? plural(events.length, "latest event") + ", newest first."
      : "No events stored for this user.";
  }

  function renderRecommendations(result) {
    const list = $("recommendations");
    list.replaceChildren();
    for (const rec of result.items) {
      const item = document.createElement("li");
      const id = document.createElement("span");
      id.className = "id item";
      id.textContent = rec.item_id;
      const score = document.createElement("span");
      score.className = "muted score";
      score.textContent = " score " + Number(rec.score).toFixed(3);
      item.append(id, score);
      list.appendChild(item);
    }
    const skipped = result.skipped_events
      ? "; " + plural(result.skipped_events, "event") + " unknown to the model skipped"
      : "";
    $("recommendations-note").textContent = "Top " + result.items.length + " from " +
      plural(result.history_events, "history event") + skipped + " (model " + result.model + ").";
  }

  function renderProfile(card) {
    $("profile-user").textContent = "— " + card.user_id;
    $("profile-events").textContent = String(card.events);
    $("profile-days").textContent = String(card.active_days);
    $("profile-segment").textContent = card.segment === null ? "–" : String(card.segment);
    $("profile-anomaly").textContent = card.anomaly_percentile === null
      ? "–" : (100 * card.anomaly_percentile).toFixed(0) + "%";
    $("profile-span").textContent = "First event " + formatTime(card.first_event) + ", latest " +
      formatTime(card.last_event) + " (UTC).";
    renderBars($("profile-types"), Object.entries(card.events_by_type), String);
    renderBars($("profile-interests"), card.interests.map((i) => [i.keywords, i.share]),
      (share) => (100 * share).toFixed(0) + "%");
    if (!card.interests.length) $("profile-interests").textContent = "No item texts to read interests from.";
    const reasons = $("profile-reasons");
    reasons.replaceChildren();
    for (const r of card.anomaly_reasons) {
      const item = document.createElement("li");
      item.textContent = r.feature + " " + r.value.toPrecision(3) + " vs typical " + r.typical.toPrecision(3) +
        " (" + r.iqr_units.toFixed(1) + " IQR)";
      reasons.appendChild(item);
    }
    const unscored = card.anomaly_percentile === null;
    const unsegmented = modelLoaded && card.segment === null;
    $("profile-note").textContent = unscored || unsegmented
      ? "New since the last refresh: " + (unscored ? "no anomaly score" : "") +
        (unscored && unsegmented ? " or " : "") + (unsegmented ? "no segment" : "") + " yet."
      : "Anomaly percentile: share of users whose behaviour is less unusual.";
    $("profile-body").hidden = false;
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

  const NOTES = {
    timeline: $("timeline-note").textContent,
    recs: $("recommendations-note").textContent,
    profile: $("profile-note").textContent,
    map: $("segment-map-note").textContent,
  };

  function clearProfile() {
    $("profile-user").textContent = "";
    $("profile-body").hidden = true;
    $("profile-note").textContent = NOTES.profile;
  }

  function clearLookup() {
    $("timeline-user").textContent = "";
    $("timeline").tBodies[0].replaceChildren();
    $("recommendations").replaceChildren();
    $("explanation").textContent = "";
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
      $("words-evidence").replaceChildren(...words.evidence.map((f) => {
        const li = document.createElement("li");
        li.textContent = "[" + f.id + "] " + f.text;
        return li;
      }));
      const count = (status) => words.claims.filter((c) => c.status === status).length;
      $("words-status").textContent = (words.source === "llm"
        ? "Every sentence is rendered from the model's claims, each checked against the data: " +
          count("verified") + " verified, " + count("corrected") + " corrected, " + count("dropped") + " dropped."
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
      // A user without events has no profile (the endpoint answers 404): nothing to ask for.
      const card = timeline.events.length ? await api(base + "/profile") : null;
      const recs = modelLoaded ? await api(base + "/recommendations?k=__K__") : null;
      if (seq !== lookupSeq) return;  // a newer lookup started meanwhile: its answer wins
      renderTimeline(timeline.user_id, timeline.events);
      lookedUp = userId;
      clearWords();
      if (card) {
        renderProfile(card);
      } else {
        clearProfile();
        $("profile-note").textContent = "No events stored for this user: no profile.";
      }
      if (recs) {
        renderRecommendations(recs);
        $("explanation").textContent = "";
        if (recs.items.length) {
          try {
            const why = await api(base + "/explanation?k=3");
            if (seq !== lookupSeq) return;
            $("explanation").textContent = "Why " + why.item_id + " first: without " +
              why.because.map((e) => e.event_type + " of " + e.item_id + " (" + e.events_ago +
                " events ago, -" + e.effect.toFixed(2) + " nats)").join(", ") +
              " the model would rank it lower.";
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
    $("segment-map").replaceChildren();
    clearError();
  });
  $("lookup-form").addEventListener("submit", (event) => { event.preventDefault(); lookup(); });
  $("words-btn").addEventListener("click", explainInWords);

  const ready = loadHealth().then(loadOverview);
  ready.finally(() => { document.body.dataset.ready = "true"; });
})();
</script>
</body>
</html>
"""


def render_dashboard() -> str:
    """The dashboard page: a fixed template with this package's version and the display limits filled in."""
    return (
        _PAGE.replace("__VERSION__", __version__)
        .replace("__LIMIT__", str(TIMELINE_LIMIT))
        .replace("__K__", str(TOP_K))
    )


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``GET /dashboard`` (kept out of the OpenAPI schema: it is not API).

    The page is rendered once; its response carries the CSP, forbids framing (the page takes an API key)
    and is not cached, so a new deployment's page is picked up at once.
    """
    page = render_dashboard()
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        """The dashboard page (static: data comes from the API, with the key typed into the page)."""
        return HTMLResponse(page, headers=headers)
