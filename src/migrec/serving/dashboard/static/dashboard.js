// migrec dashboard: what every page shares. The pages read the service's JSON API (the same one API
// clients call) with the API key typed into the header, draw with Chart.js, and follow GET /stream.
"use strict";
(function () {
  const body = document.body;
  const KEY = "migrec-api-key";
  // Okabe-Ito and companions: distinguishable with colour-blindness, dark enough on white
  const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D31", "#6A3D9A", "#7F7F7F"];
  window.migrecCharts = {};

  const keyInput = document.getElementById("api-key");
  keyInput.value = sessionStorage.getItem(KEY) || "";
  keyInput.addEventListener("change", () => {
    sessionStorage.setItem(KEY, keyInput.value.trim());
    document.dispatchEvent(new Event("migrec:key"));
  });
  const key = () => sessionStorage.getItem(KEY) || "";

  function detail(body) {
    if (!body || body.detail === undefined) return "";
    if (typeof body.detail === "string") return body.detail;
    return body.detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + d.msg).join("; ");
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (key()) headers["X-API-Key"] = key();
    const response = await fetch(path, { ...options, headers });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error(detail(data) || response.status + " " + response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // elements are built with text nodes only: nothing from the API is ever parsed as HTML
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = {
    int: (x) => (x === null || x === undefined ? "–" : Math.round(x).toLocaleString("en")),
    num: (x, digits = 4) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits)),
    pct: (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"),
    date: (seconds) => (seconds ? new Date(seconds * 1000).toISOString().slice(0, 10) : "–"),
    time: (seconds) => (seconds ? new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ") : "–"),
  };

  const prefix = body.dataset.prefix;
  const links = {
    user: (id) => prefix + "/users/" + encodeURIComponent(id),
    item: (id) => prefix + "/items/" + encodeURIComponent(id),
  };
  const path = (id) => encodeURIComponent(id);

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  // Chart.js comes after the page scripts (so their API calls start first): drawing waits for it
  const libraries = new Promise((resolve) => {
    if (window.Chart) resolve();
    else document.addEventListener("DOMContentLoaded", () => resolve(), { once: true });
  });

  // a chart, redrawn in place: Chart.js with animation off (a refresh must not flicker), and the same
  // numbers as a table for screen readers and keyboard users
  function chart(id, config, table) {
    const canvas = document.getElementById(id);
    const old = window.migrecCharts[id];
    if (old) old.destroy();
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    const made = new window.Chart(canvas, config);
    window.migrecCharts[id] = made;
    if (table) {
      const holder = canvas.parentElement;
      let details = holder.nextElementSibling;
      if (!details || !details.classList.contains("data")) {
        details = el("details", { class: "data" });
        holder.after(details);
      }
      const head = el("tr", {}, table.columns.map((c) => el("th", { scope: "col", text: c })));
      const rows = table.rows.map((r) => el("tr", {}, r.map((c) => el("td", { text: c }))));
      details.replaceChildren(el("summary", { text: "Data table" }),
        el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, rows))));
    }
    return made;
  }

  function ready() {
    if (body.dataset.ready !== "true") {
      window.migrecReadyMs = performance.now();
      body.dataset.ready = "true";
    } else {
      body.dataset.refreshes = String(Number(body.dataset.refreshes || 0) + 1);
    }
  }

  function fail(error) {
    const box = document.getElementById("error");
    box.textContent = error.status === 401 || error.status === 403
      ? "Not allowed: " + error.message + " (enter an API key at the top)"
      : "Could not load: " + error.message;
    box.hidden = false;
  }

  function clearError() {
    document.getElementById("error").hidden = true;
  }

  // GET /stream read with fetch (EventSource cannot send the API key header); reconnects with backoff
  function stream(query, onMessage) {
    const status = document.getElementById("live");
    let wait = 1000, controller = null, timer = null;
    async function connect() {
      const headers = { Accept: "text/event-stream" };
      if (key()) headers["X-API-Key"] = key();
      controller = new AbortController();
      const mine = controller;
      try {
        const response = await fetch("/stream" + (query ? "?" + query : ""), { headers, signal: mine.signal });
        if (!response.ok) throw new Error("stream answered " + response.status);
        status.textContent = "live"; status.className = "live on";
        wait = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let kind = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) kind = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) onMessage(kind, JSON.parse(data));
          }
        }
      } catch (error) {
        if (mine.signal.aborted) return;          // a new key: reconnected already
        status.textContent = "live updates paused: " + error.message;
      }
      status.className = "live off";
      if (!status.textContent.startsWith("live updates paused")) status.textContent = "reconnecting…";
      timer = setTimeout(connect, wait);
      wait = Math.min(wait * 2, 15000);
    }
    connect();
    document.addEventListener("migrec:key", () => {   // the stream again with the new key; the page stays
      clearTimeout(timer);
      controller.abort();
      wait = 1000;
      connect();
    });
  }

  // run `load` now and again (at most one at a time; a request while one runs is queued once)
  function refresher(load) {
    let running = null, again = false;
    async function refresh() {
      if (running) { again = true; return running; }
      running = (async () => {
        try { await load(); clearError(); } catch (error) { await libraries; fail(error); }
        ready();
      })();
      await running;
      running = null;
      if (again) { again = false; await refresh(); }
    }
    document.addEventListener("migrec:key", () => refresh());     // reads may need the new key
    return refresh;
  }

  // update runs (GET /admin/updates), newest first: the overview's and the models page's table
  function updatesTable(tbody, updates) {
    fill(tbody, updates.length ? updates.map((u) => el("tr", {},
      el("td", { text: fmt.time(u.started) }), el("td", { class: "num", text: fmt.num(u.seconds, 1) }),
      el("td", { text: u.from_version + " → " + (u.to_version ?? "–") }), el("td", { class: "num", text: fmt.int(u.events) }),
      el("td", { class: "num", text: fmt.num((u.metrics_before || {})["NDCG@10"]) }),
      el("td", { class: "num", text: fmt.num((u.metrics_after || {})["NDCG@10"]) }),
      el("td", { text: u.decision }))) : [el("tr", {}, el("td", { colspan: 7, text: "no update has run yet" }))]);
  }

  function versionShown(version) {
    const foot = document.getElementById("foot-version");
    if (foot) foot.textContent = version;
  }

  window.migrec = { api, el, fmt, links, path, fill, chart, libraries, ready, fail, stream, refresher, versionShown, updatesTable,
                    PALETTE };
})();
