// Overview: counts, events per minute (live), the live model, request latency, cold-start share, updates.
"use strict";
(function () {
  const { libraries, api, el, fmt, fill, chart, stream, refresher, versionShown, updatesTable, PALETTE } = window.migrec;

  const refresh = refresher(async () => {
    const [stats, updates] = await Promise.all([api("/stats"), api("/admin/updates?limit=10")]);
    await libraries;
    for (const dd of document.querySelectorAll("#counts dd")) dd.textContent = fmt.int(stats[dd.dataset.key]);
    const minutes = stats.recent.events_per_minute;
    const labels = minutes.map((m) => new Date(m.minute * 1000).toISOString().slice(11, 16));
    chart("events-chart", {
      type: "bar",
      data: { labels, datasets: [{ label: "events per minute", data: minutes.map((m) => m.events), backgroundColor: PALETTE[0] }] },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    }, { columns: ["minute (UTC)", "events"], rows: minutes.filter((m) => m.events).map((m, i) => [fmt.time(m.minute), m.events]) });
    const model = stats.model;
    const metrics = Object.entries(model.metrics || {}).map(([k, v]) => k + " " + fmt.num(v)).join(", ") || "none recorded";
    versionShown(model.version);
    document.getElementById("model").replaceChildren(el("dl", { class: "fields" },
      el("dt", { text: "Version" }), el("dd", { text: String(model.version) + " (" + model.kind + ")" }),
      el("dt", { text: "Trained on events up to" }), el("dd", { text: "seq " + fmt.int(model.events_upto) + ", made " + fmt.time(model.created) }),
      el("dt", { text: "Validation metrics" }), el("dd", { text: metrics }),
      el("dt", { text: "Catalogue" }), el("dd", { text: fmt.int(model.items) + " items in " + model.domains.join(", ") }),
      el("dt", { text: "Item text encoder" }), el("dd", { text: model.encoder || "none (ID model)" })));
    const paths = stats.metrics.paths;
    const served = Object.values(paths).reduce((a, b) => a + b, 0);
    document.getElementById("cold-share").textContent = served
      ? Object.entries(paths).map(([p, n]) => p + " " + fmt.int(n)).join(" · ") + " — cold-start share " + fmt.pct(stats.metrics.cold_share)
      : "no recommendation served yet";
    const latency = Object.entries(stats.recent.latency);
    fill(document.querySelector("#latency tbody"), latency.length ? latency.map(([route, r]) => el("tr", {},
      el("td", { text: route }), el("td", { class: "num", text: fmt.int(r.count) }),
      el("td", { class: "num", text: fmt.num(r.p50_ms, 1) }), el("td", { class: "num", text: fmt.num(r.p95_ms, 1) }),
      el("td", { class: "num", text: fmt.num(r.p99_ms, 1) }))) : [el("tr", {}, el("td", { colspan: 5, text: "no requests yet" }))]);
    updatesTable(document.querySelector("#updates tbody"), updates.updates);
  });

  refresh();
  let pending = null;
  stream("", () => {                    // events arrive in bursts: redraw at most once a second
    if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 1000);
  });
  setInterval(refresh, 15000);          // latency percentiles move without events too
})();
