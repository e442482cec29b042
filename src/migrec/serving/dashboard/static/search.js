// Search: users by id prefix, items by id or title.
"use strict";
(function () {
  const { api, el, links, fill, refresher } = window.migrec;
  const form = document.getElementById("search-form");
  const input = document.getElementById("q");
  const note = document.getElementById("search-note");
  document.getElementById("live").textContent = "";            // search answers on demand: no stream here

  const run = refresher(async () => {
    const q = input.value.trim();
    if (!q) {
      note.textContent = "Type a user id, an item id or words of a title.";
      fill(document.getElementById("user-results"), []);
      fill(document.getElementById("item-results"), []);
      return;
    }
    const found = await api("/search?limit=25&q=" + encodeURIComponent(q));
    note.textContent = found.users.length + " users and " + found.items.length + " items match “" + q + "”.";
    fill(document.getElementById("user-results"), found.users.length
      ? found.users.map((u) => el("li", {}, el("a", { href: links.user(u), text: u })))
      : [el("li", { text: "no user id starts with it" })]);
    fill(document.getElementById("item-results"), found.items.length
      ? found.items.map((it) => el("li", {}, el("a", { href: links.item(it.item_id), text: it.title }),
          " ", el("span", { class: "meta", text: it.item_id + " · " + it.domain + (it.cold ? " · cold" : "") })))
      : [el("li", { text: "no item matches" })]);
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    history.replaceState(null, "", "?q=" + encodeURIComponent(input.value.trim()));
    run();
  });
  run();
})();
