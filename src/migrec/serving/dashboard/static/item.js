// Item page: text, domain, cold or not, popularity over time, similar items.
"use strict";
(function () {
  const { libraries, api, el, fmt, links, path, fill, chart, refresher, stream, PALETTE } = window.migrec;
  const id = document.body.dataset.itemId;

  // days since the epoch -> bars by day, or by month when the span is long
  function series(byDay) {
    if (!byDay.length) return { labels: [], counts: [], unit: "day" };
    const span = byDay[byDay.length - 1].day - byDay[0].day;
    const unit = span > 120 ? "month" : "day";
    const totals = new Map();
    for (const { day, count } of byDay) {
      const iso = new Date(day * 86400000).toISOString();
      const key = unit === "month" ? iso.slice(0, 7) : iso.slice(0, 10);
      totals.set(key, (totals.get(key) || 0) + count);
    }
    return { labels: [...totals.keys()], counts: [...totals.values()], unit };
  }

  const refresh = refresher(async () => {
    const [item, similar] = await Promise.all([api("/items/" + path(id)), api("/items/" + path(id) + "/similar?k=10")]);
    await libraries;
    document.getElementById("item-title").textContent = item.title;
    document.title = item.title + " · migrec";
    document.getElementById("item-domain").textContent = item.domain;
    const cold = document.getElementById("cold");
    cold.textContent = item.cold ? "cold: text only" : "warm";
    cold.className = "badge" + (item.cold ? " cold" : "");
    document.getElementById("item-events").textContent = fmt.int(item.events) + " events stored";
    const fields = Object.entries(item.fields);
    document.getElementById("fields").replaceChildren(
      el("dt", { text: "item id" }), el("dd", { text: item.item_id }),
      ...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    const s = series(item.by_day);
    chart("popularity", {
      type: "bar",
      data: { labels: s.labels, datasets: [{ label: "events per " + s.unit, data: s.counts, backgroundColor: PALETTE[2] }] },
      options: { plugins: { legend: { display: true } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    }, { columns: [s.unit, "events"], rows: s.labels.map((l, i) => [l, s.counts[i]]) });
    fill(document.getElementById("similar"), similar.items.map((it) => el("li", { "data-item-id": it.item_id },
      el("a", { href: links.item(it.item_id), text: it.title || it.item_id }), " ",
      el("span", { class: "meta", text: it.domain + " · cosine " + fmt.num(it.score, 3) }))));
  });

  refresh();
  let pending = null;
  stream("", () => { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 2000); });
})();
