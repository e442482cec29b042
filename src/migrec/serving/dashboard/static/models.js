// Models page: versions and their metrics, NDCG@10 over versions, the update history, rollback.
"use strict";
(function () {
  const { libraries, api, el, fmt, fill, chart, stream, refresher, versionShown, updatesTable, PALETTE } = window.migrec;
  const statusBox = document.getElementById("rollback-status");

  const ndcg = (v) => v.metrics["NDCG@10"] ?? v.metrics["valid_ndcg@10"] ?? null;

  async function rollback(version, button) {
    button.disabled = true;
    try {
      const result = await api("/admin/rollback", { method: "POST", body: JSON.stringify({ version }) });
      statusBox.className = "status";
      statusBox.textContent = "Now serving version " + result.to_version + " (was " + result.from_version + ")";
    } catch (error) {
      statusBox.className = "status refused";
      statusBox.textContent = "Refused: " + error.message;
    }
    button.disabled = false;
    await refresh();
  }

  const refresh = refresher(async () => {
    const [versions, updates] = await Promise.all([api("/admin/versions"), api("/admin/updates?limit=50")]);
    await libraries;
    versionShown(versions.live);
    const rows = versions.versions.slice().reverse();
    fill(document.querySelector("#versions tbody"), rows.map((v) => {
      const live = v.version === versions.live;
      const metrics = Object.entries(v.metrics).filter(([, x]) => x !== null).map(([k, x]) => k + " " + (Number.isInteger(x) ? fmt.int(x) : fmt.num(x))).join(", ");
      return el("tr", { "data-version": v.version, "data-live": live ? "true" : "false" },
        el("th", { scope: "row", text: String(v.version) }), el("td", { text: fmt.time(v.created) }),
        el("td", {}, live ? el("strong", { text: "live" }) : v.status),
        el("td", { class: "num", text: fmt.int(v.events_upto) }), el("td", { text: metrics || "–" }),
        el("td", { text: v.note || "" }),
        el("td", {}, live ? "serving" : el("button", { type: "button", class: "rollback",
          onclick: (e) => rollback(v.version, e.currentTarget), text: "Roll back to version " + v.version })));
    }));
    const points = versions.versions.map((v) => ({ v: v.version, y: ndcg(v), trained: "valid_ndcg@10" in v.metrics }));
    chart("ndcg-chart", {
      type: "line",
      data: {
        labels: points.map((p) => "v" + p.v),
        datasets: [
          { label: "trained: validation NDCG@10", data: points.map((p) => (p.trained ? p.y : null)),
            borderColor: PALETTE[0], backgroundColor: PALETTE[0], showLine: false, pointRadius: 6 },
          { label: "updated: held-back NDCG@10", data: points.map((p) => (p.trained ? null : p.y)),
            borderColor: PALETTE[1], backgroundColor: PALETTE[1], spanGaps: true, pointRadius: 5, pointStyle: "rectRot" },
        ],
      },
      options: { scales: { y: { beginAtZero: true } } },
    }, { columns: ["version", "NDCG@10", "kind"], rows: points.map((p) => ["v" + p.v, fmt.num(p.y), p.trained ? "validation" : "held back"]) });
    updatesTable(document.querySelector("#updates tbody"), updates.updates);
  });

  refresh();
  stream("", (kind) => { if (kind === "version" || kind === "update") refresh(); });
})();
