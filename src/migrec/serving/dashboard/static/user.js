// User page: history, interest timeline with migrations, long- vs short-term profile, recommendations
// with their explanations and serving path; follows the user's new events live.
"use strict";
(function () {
  const { libraries, api, el, fmt, links, path, fill, chart, stream, refresher, versionShown, PALETTE } = window.migrec;
  const user = document.body.dataset.userId;
  const base = "/users/" + path(user);
  const domainSelect = document.getElementById("domain");
  let newest = new Set();            // items of the events that arrived live (flashed in the table)

  function recommendations(answer) {
    const pathBadge = document.getElementById("path");
    pathBadge.textContent = answer.path;
    pathBadge.className = "badge " + answer.path;
    document.getElementById("path-note").textContent = answer.reason
      ? "(" + answer.reason + ")"
      : answer.path === "cross-domain" ? "(no events in this domain: scored from the other domains)" : "";
    versionShown(answer.model_version);
    fill(document.getElementById("recommendations"), answer.items.map((item) => el("li", { "data-item-id": item.item_id },
      el("a", { href: links.item(item.item_id), text: item.title || item.item_id }), " ",
      el("span", { class: "meta" }, item.domain, " · score ", el("span", { class: "score", text: fmt.num(item.score) })),
      el("ul", { class: "because", "aria-label": "because of" },
        (item.because || []).map((b) => el("li", {}, "because of ",
          el("a", { href: links.item(b.item_id), text: b.title || b.item_id }),
          " (" + fmt.date(b.timestamp) + ", weight " + fmt.num(b.weight, 3) + ")"))))));
    if (!answer.items.length) {
      document.getElementById("recommendations").append(el("li", { text: "no items to recommend" }));
    }
  }

  function history(answer) {
    const events = answer.events.slice().reverse();
    document.getElementById("history-note").textContent = events.length
      ? "Newest " + events.length + " events, newest first." : "No events yet: recommendations are cold-start.";
    fill(document.querySelector("#history tbody"), events.map((e, n) => el("tr",
      { "data-item-id": e.item_id, class: n < newest.size && newest.has(e.item_id) ? "flash" : null },
      el("td", { text: fmt.time(e.timestamp) }),
      el("td", {}, el("a", { href: links.item(e.item_id), text: e.title || e.item_id })),
      el("td", { text: e.domain }), el("td", { text: e.type }))));
  }

  function profile(interests) {
    const topics = [...new Set([...interests.long.slice(0, 8), ...interests.short.slice(0, 8)].map((t) => t.topic))];
    const share = (list, topic) => (list.find((t) => t.topic === topic) || { share: 0 }).share;
    chart("profile", {
      type: "bar",
      data: {
        labels: topics,
        datasets: [
          { label: "long-term", data: topics.map((t) => share(interests.long, t)), backgroundColor: PALETTE[0] },
          { label: "short-term (newest 10)", data: topics.map((t) => share(interests.short, t)), backgroundColor: PALETTE[1] },
        ],
      },
      options: { indexAxis: "y", scales: { x: { min: 0, ticks: { format: { style: "percent" } } } } },
    }, { columns: ["topic", "long-term", "short-term"],
         rows: topics.map((t) => [t, fmt.pct(share(interests.long, t)), fmt.pct(share(interests.short, t))]) });
    document.getElementById("blend").textContent = interests.blend_weight === null ? ""
      : "Short-term weight in the served scores: " + fmt.pct(interests.blend_weight);
  }

  function timeline(interests) {
    const t = interests.timeline;
    // dates label the periods when they tell periods apart (many users rate a whole history in a day)
    const dated = new Set(t.periods.map((p) => p.date)).size > t.periods.length / 2 && t.periods.every((p) => p.date);
    const labels = t.periods.map((p) => (dated ? p.date : "event " + (p.start + 1)));
    const marks = {};
    interests.migrations.forEach((m, n) => {
      marks["m" + n] = {
        type: "line", xMin: m.period, xMax: m.period, borderColor: "#a4001d", borderWidth: 2, borderDash: [6, 4],
        label: { display: true, content: "migration" + (m.timestamp ? " " + m.timestamp : ""), position: "start",
                 backgroundColor: "#a4001d", color: "#fff", font: { size: 11 } },
      };
    });
    chart("timeline", {
      type: "line",
      data: {
        labels,
        datasets: t.series.map((s, i) => ({
          label: s.topic, data: s.shares, fill: i === 0 ? "origin" : "-1", pointRadius: 0, borderWidth: 1,
          borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length] + "b3",
        })),
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { y: { stacked: true, min: 0, max: 1, ticks: { format: { style: "percent" } } },
                  x: { ticks: { maxRotation: 0, autoSkip: true } } },
        plugins: { annotation: { annotations: marks } },
      },
    }, { columns: ["period start", "events"].concat(t.series.map((s) => s.topic)),
         rows: t.periods.map((p, i) => [labels[i], p.events].concat(t.series.map((s) => fmt.pct(s.shares[i])))) });
    document.getElementById("timeline").dataset.migrations = String(interests.migrations.length);
    fill(document.getElementById("migrations"), interests.migrations.length
      ? interests.migrations.map((m) => el("li", {},
          (m.timestamp || "event " + (m.position + 1)) + ": from ",
          m.before.map((b) => b.topic + " " + fmt.pct(b.share)).join(", ") || "–", " to ",
          m.after.map((b) => b.topic + " " + fmt.pct(b.share)).join(", ") || "–"))
      : [el("li", { text: "none detected" })]);
  }

  function modelInterests(interests) {
    const found = interests.model_interests;
    document.getElementById("model-interests-card").hidden = !found;
    if (!found) return;
    chart("interest-mix", {
      type: "doughnut",
      data: { labels: found.map((g) => g.name),
              datasets: [{ data: found.map((g) => g.weight), backgroundColor: found.map((g, i) => PALETTE[i % PALETTE.length]) }] },
      options: { plugins: { legend: { position: "right" } } },
    }, { columns: ["interest", "share"], rows: found.map((g) => [g.name, fmt.pct(g.weight)]) });
    fill(document.getElementById("model-interests"), found.map((g) => el("li", {},
      el("strong", { text: g.name + " " + fmt.pct(g.weight) }),
      el("span", { class: "meta", text: " (" + g.topics.map((t) => t.topic + " " + fmt.pct(t.share)).join(", ") + ")" }),
      el("ul", { class: "because" },
        el("li", { text: "from: " + (g.items.join(", ") || "–") }),
        el("li", { text: "suggests: " + (g.suggestions.join(", ") || "–") })))));
  }

  const refresh = refresher(async () => {
    const domain = domainSelect.value;
    const query = "?k=10&explain=true" + (domain ? "&domain=" + encodeURIComponent(domain) : "");
    const [h, i, r] = await Promise.all([api(base + "/history?limit=200"), api(base + "/interests"),
                                         api(base + "/recommendations" + query)]);
    await libraries;
    history(h);
    profile(i);
    timeline(i);
    modelInterests(i);
    recommendations(r);
  });

  domainSelect.addEventListener("change", refresh);
  refresh();
  stream("user_id=" + encodeURIComponent(user), (kind, data) => {
    if (kind === "events") {
      newest = new Set(data.events.map((e) => e.item_id));
      refresh();
    } else if (kind === "version") {
      refresh();
    }
  });
})();
