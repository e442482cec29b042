"""The dashboard in a real headless browser (Debian's chromium driven by Playwright) against
`migrec serve` on loopback with the small two-domain world (tests/browserkit.py):

- the user page follows a posted event without a reload: the history's newest row is the posted
  item, the recommendations change (the posted item, the old top pick, leaves the list) and the
  interest timeline drawn is the API's new one;
- the interest timeline draws one marker line per migration the API reports, at its period;
- rollback on the models page works with an admin key and is refused without one (and with a
  write key); the button is reached and pressed from the keyboard alone, after the skip link;
- the search form, typed into and submitted from the keyboard, finds an item by a title word;
- every page renders (body[data-ready=true]) with its contract elements, matching the JSON API;
- axe-core finds no serious or critical accessibility violation on any page;
- nothing overflows horizontally at a phone's width;
- no request leaves loopback (every other request is aborted and recorded).

Screenshots of each page go to the test's tmp folder, and to docs/dashboard/ with
MIGREC_SCREENSHOTS=1 (`make screenshots`). Render times are printed at the end of the run, never
asserted (benchmarks/run_dashboard.py measures them)."""
from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest

from browserkit import LAPTOP, PHONE, dashboard, browser, open_context, render_log, render_ms, shots  # noqa: F401

SERIOUS = ("serious", "critical")


# -- helpers -----------------------------------------------------------------------------------------
def ids(page, selector: str) -> list[str]:
    return page.locator(selector).evaluate_all("els => els.map(e => e.dataset.itemId)")


def chart(page, canvas: str) -> dict:
    """The Chart.js object of a canvas, as the page registered it: type and dataset sizes."""
    return page.evaluate("""id => { const c = (window.migrecCharts || {})[id];
        return c ? {type: c.config.type, canvas: c.canvas && c.canvas.id,
                    datasets: c.data.datasets.map(d => d.data.length)} : null; }""", canvas)


def timeline_series(page) -> list:
    return page.evaluate("window.migrecCharts.timeline.data.datasets.map(d => d.data)")


def visit(page, url: str, name: str, render_log) -> float:
    ms = render_ms(page, url)
    render_log.setdefault(name, []).append(ms)
    return ms


def no_serious_violations(page) -> list:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
            for v in results.response["violations"] if v["impact"] in SERIOUS]


def loopback_only(context) -> None:
    assert context.guard.requests, "the guard saw no request at all"
    assert context.guard.outside == []


def user_with_migrations(dash, limit: int = 300) -> tuple[str, dict]:
    """The first user (by id) whose interests show a migration."""
    for u in range(1, limit + 1):
        got = dash.get(f"/users/{u}/interests")
        if got["migrations"]:
            return str(u), got
    pytest.fail(f"no user among the first {limit} has a detected migration")


@pytest.fixture(scope="module")
def pages(dashboard):
    """Page name -> (url, what the API says the page should show)."""
    user, _ = user_with_migrations(dashboard)          # its screenshot shows the migration markers
    item = dashboard.domains["classic"][3]
    item_info = dashboard.get(f"/items/{item}")
    return {"overview": (dashboard.page_url(""), {}),
            "user": (dashboard.page_url(f"users/{user}"), {"user": user}),
            "item": (dashboard.page_url(f"items/{quote(item)}"), {"item": item, "info": item_info}),
            "models": (dashboard.page_url("models"), {}),
            "search": (dashboard.page_url("search?q=12"), {"q": "12"})}


# -- rollback needs an admin key -----------------------------------------------------------------------------
def make_second_version(dash) -> dict:
    """Events since version 1 (users 251-280 each take their current top 3, dated mid-1998 like the
    log's last ones: the model's own picks, so the held-back check has something to find), then
    one update run; the version is kept or rejected by the update's own check."""
    versions = dash.get("/admin/versions")
    if len(versions["versions"]) >= 2:
        return versions
    events = []
    for u in range(251, 281):
        top = dash.get(f"/users/{u}/recommendations", k=3)["items"]
        events += [{"user_id": str(u), "item_id": i["item_id"], "timestamp": 9.0e8 + u * 10 + n}
                   for n, i in enumerate(top)]
    assert dash.post("/events", {"events": events})["accepted"] == 90
    record = dash.post("/admin/update", scope="admin")
    assert record["to_version"] == 2 and record["decision"] in ("swapped", "rejected")
    return dash.get("/admin/versions")


def click_rollback(page) -> tuple[str, str]:
    """Click the first non-live row's rollback button; (its version, the status text once it changed)."""
    button = page.locator("#versions tr[data-version]:not([data-live='true']) button.rollback").first
    row = button.locator("xpath=ancestor::tr[1]")
    target = row.get_attribute("data-version")
    assert button.inner_text().strip() == f"Roll back to version {target}"
    status = page.locator("#rollback-status")
    before = status.inner_text().strip()
    button.click()
    page.wait_for_function("old => { const t = document.querySelector('#rollback-status').textContent.trim();"
                           " return t.length > 0 && t !== old; }", arg=before, timeout=30_000)
    return target, status.inner_text().strip()


def enter_key(page, key: str, url: str, render_log) -> None:
    """Type an API key into the header's field (by its label) and leave it; it is kept in the tab's
    sessionStorage. The page then starts afresh (it may reload itself on a new key: open it again)."""
    field = page.get_by_label("API key")
    field.fill(key)
    field.press("Tab")
    page.wait_for_function("k => sessionStorage.getItem('migrec-api-key') === k", arg=key, timeout=10_000)
    visit(page, url, "models", render_log)
    assert page.get_by_label("API key").input_value() == key


def test_rollback_is_refused_without_an_admin_key(dashboard, browser, render_log):
    versions = make_second_version(dashboard)
    context = open_context(browser)
    page = context.new_page()
    visit(page, dashboard.page_url("models"), "models", render_log)
    # from the keyboard alone: the skip link first, then Tab through the content to the rollback button
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.matches('button.rollback')"):
            break
    else:
        pytest.fail("no rollback button within 60 presses of Tab after the skip link")
    target = page.evaluate("document.activeElement.closest('tr').dataset.version")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#rollback-status').textContent.trim().length > 0",
                           timeout=30_000)
    text = page.locator("#rollback-status").inner_text().strip()
    assert text.startswith("Refused"), text
    assert dashboard.get("/admin/versions")["live"] == versions["live"] != int(target)
    # a write key is not an admin key either
    enter_key(page, dashboard.keys["write"], dashboard.page_url("models"), render_log)
    assert page.locator("#rollback-status").inner_text().strip() == ""
    _, text = click_rollback(page)
    assert text.startswith("Refused"), text
    assert dashboard.get("/admin/versions")["live"] == versions["live"]
    loopback_only(context)
    context.close()


def test_rollback_works_with_an_admin_key(dashboard, browser, render_log, tmp_path):
    versions = make_second_version(dashboard)
    context = open_context(browser)
    page = context.new_page()
    visit(page, dashboard.page_url("models"), "models", render_log)
    enter_key(page, dashboard.keys["admin"], dashboard.page_url("models"), render_log)
    target, text = click_rollback(page)
    assert re.match(rf"Now serving version {target}\b", text), text
    assert dashboard.get("/admin/versions")["live"] == int(target) != versions["live"]
    page.wait_for_selector(f"#versions tr[data-version='{target}'][data-live='true']", state="attached",
                           timeout=30_000)
    assert page.locator("#versions tr[data-live='true']").count() == 1
    # and back again, so the session's server serves what it served before
    back, text = click_rollback(page)
    assert int(back) == versions["live"] and re.match(rf"Now serving version {back}\b", text), text
    assert dashboard.get("/admin/versions")["live"] == versions["live"]
    loopback_only(context)
    context.close()


# -- the user page follows the live event stream --------------------------------------------------------
def test_user_page_follows_a_posted_event_without_reload(dashboard, browser, render_log, tmp_path):
    user = "12"
    context = open_context(browser)
    page = context.new_page()
    ms = visit(page, dashboard.page_url(f"users/{user}"), "user", render_log)
    assert ms > 0
    assert page.locator("body").get_attribute("data-refreshes") == "0"
    before = ids(page, "#recommendations li[data-item-id]")
    api = dashboard.get(f"/users/{user}/recommendations", k=len(before))
    assert before == [i["item_id"] for i in api["items"]]
    history = dashboard.get(f"/users/{user}/history", limit=100000)["events"]
    assert ids(page, "#history tbody tr[data-item-id]")[0] == history[-1]["item_id"]   # newest first
    posted = before[0]                                          # the top pick: consuming it must move the list
    interests_before, series_before = dashboard.get(f"/users/{user}/interests"), timeline_series(page)
    assert series_before == [s["shares"] for s in interests_before["timeline"]["series"]]
    page.evaluate("window.__noReload = 'still here'")
    sent = time.perf_counter()
    ack = dashboard.post("/events", {"user_id": user, "item_id": posted})
    assert ack["accepted"] == 1
    # the refresh that shows it: refreshes counts up and the history's newest row is the posted item
    page.wait_for_function("item => Number(document.body.dataset.refreshes) > 0 && (document.querySelector("
                           "'#history tbody tr[data-item-id]') || {dataset: {}}).dataset.itemId === item",
                           arg=posted, timeout=30_000)
    seconds = time.perf_counter() - sent
    render_log.setdefault("user-refresh-after-post", []).append(seconds * 1000)
    assert page.evaluate("window.__noReload") == "still here"            # the same document: no reload
    assert ids(page, "#history tbody tr[data-item-id]")[0] == posted
    page.wait_for_function("ids => { const now = [...document.querySelectorAll('#recommendations li[data-item-id]')]"
                           ".map(e => e.dataset.itemId); return now.length > 0 && now.join() !== ids.join(); }",
                           arg=before, timeout=10_000)
    after = ids(page, "#recommendations li[data-item-id]")
    assert posted not in after and after != before
    assert after == [i["item_id"] for i in dashboard.get(f"/users/{user}/recommendations", k=len(after))["items"]]
    # the interests follow too: the timeline drawn is the API's new one, which counts the posted event
    interests = dashboard.get(f"/users/{user}/interests")
    assert interests["events"] == interests_before["events"] + 1
    assert timeline_series(page) == [s["shares"] for s in interests["timeline"]["series"]]
    if interests["timeline"]["series"] != interests_before["timeline"]["series"]:
        assert timeline_series(page) != series_before
    loopback_only(context)
    context.close()


# -- the interest timeline ------------------------------------------------------------------------------
def test_interest_timeline_marks_each_migration(dashboard, browser, render_log, tmp_path):
    user, interests = user_with_migrations(dashboard)
    context = open_context(browser)
    page = context.new_page()
    visit(page, dashboard.page_url(f"users/{user}"), "user", render_log)
    timeline = page.locator("canvas#timeline")
    assert int(timeline.get_attribute("data-migrations")) == len(interests["migrations"]) > 0
    # the markers on the chart itself (annotation lines), one at each migration's period
    marks = page.evaluate("Object.values(window.migrecCharts.timeline.options.plugins.annotation.annotations)"
                          ".map(a => [a.type, a.xMin])")
    assert marks == [["line", m["period"]] for m in interests["migrations"]]
    drawn = chart(page, "timeline")
    assert drawn is not None and drawn["canvas"] == "timeline" and len(drawn["datasets"]) >= 2   # stacked topics
    profile = chart(page, "profile")
    assert profile is not None and sum(profile["datasets"]) > 0
    assert page.locator("#path").inner_text().strip() in ("warm", "cross-domain", "cold")
    loopback_only(context)
    context.close()


# -- every page renders with its contract elements --------------------------------------------------------
def check_overview(page, dash, expect):
    stats = dash.get("/stats")
    text = page.locator("#counts").inner_text().replace(",", "").replace("\u202f", "").replace("\u00a0", "")
    for key in ("users", "events", "items", "domains"):
        assert key in text.lower() and str(stats[key]) in text, (key, stats[key], text)
    assert chart(page, "events-chart") is not None
    for sel in ("#latency", "#updates", "#model", "#cold-share"):
        assert page.locator(sel).count() == 1, sel
    assert f"{stats['model_version']}" in page.locator("#model").inner_text()


def check_user(page, dash, expect):
    user = expect["user"]
    api = dash.get(f"/users/{user}/recommendations", k=10)
    assert page.locator("#path").inner_text().strip() == api["path"]
    recs = page.locator("#recommendations li[data-item-id]")
    assert recs.count() > 0
    for n in range(recs.count()):
        assert recs.nth(n).locator(".score").count() == 1
        assert recs.nth(n).locator(".because").count() == 1
    history = dash.get(f"/users/{user}/history", limit=100000)["events"]
    rows = ids(page, "#history tbody tr[data-item-id]")
    assert rows and rows == [e["item_id"] for e in history[::-1][:len(rows)]]
    assert chart(page, "timeline") is not None and chart(page, "profile") is not None


def check_item(page, dash, expect):
    info = expect["info"]
    assert page.locator("#item-title").inner_text().strip() == info["title"]
    assert page.locator("#item-domain").inner_text().strip() == info["domain"]
    assert page.locator("#cold").inner_text().strip() == ("cold: text only" if info["cold"] else "warm")
    assert chart(page, "popularity") is not None
    similar = ids(page, "#similar li[data-item-id]")
    api = [i["item_id"] for i in dash.get(f"/items/{expect['item']}/similar", k=max(len(similar), 1))["items"]]
    assert similar and similar == api
    first = page.locator("#similar li[data-item-id] a").first.get_attribute("href")
    assert first.rstrip("/").endswith(f"/dashboard/items/{quote(similar[0])}")


def check_models(page, dash, expect):
    versions = dash.get("/admin/versions")
    rows = page.locator("#versions tr[data-version]")
    assert sorted(int(v) for v in rows.evaluate_all("els => els.map(e => e.dataset.version)")) == \
        sorted(v["version"] for v in versions["versions"])
    live = page.locator("#versions tr[data-live='true']")
    assert live.count() == 1 and live.get_attribute("data-version") == str(versions["live"])
    assert chart(page, "ndcg-chart") is not None
    assert page.locator("#updates").count() == 1
    assert page.locator("#rollback-status").get_attribute("role") == "status"


def check_search(page, dash, expect):
    api = dash.get("/search", q=expect["q"], limit=25)
    users = page.locator("#user-results a").all_inner_texts()
    assert users == api["users"] and expect["q"] in users              # the user whose id it is, then prefixes
    hrefs = page.locator("#item-results a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert hrefs and [h.rstrip("/").rsplit("/", 1)[1] for h in hrefs] == [quote(i["item_id"]) for i in api["items"]]
    assert page.locator("#search-form #q").input_value() == expect["q"]


CHECKS = {"overview": check_overview, "user": check_user, "item": check_item, "models": check_models,
          "search": check_search}


@pytest.mark.parametrize("name", list(CHECKS))
def test_page_renders_with_its_elements_and_no_serious_accessibility_violation(name, pages, dashboard, browser,
                                                                               render_log, tmp_path):
    url, expect = pages[name]
    context = open_context(browser)
    page = context.new_page()
    visit(page, url, name, render_log)
    assert page.locator("body").get_attribute("data-page") == name
    CHECKS[name](page, dashboard, expect)
    assert no_serious_violations(page) == []
    assert page.get_by_label("API key").count() == 1
    shots(page, name, tmp_path)
    loopback_only(context)
    context.close()


def test_search_form_finds_an_item_by_a_word_of_its_title(dashboard, browser, render_log):
    item = dashboard.domains["recent"][5]
    title = dashboard.get(f"/items/{item}")["title"]
    word = max((w.strip("(),:!?.'\"") for w in title.split()), key=len)
    context = open_context(browser)
    page = context.new_page()
    visit(page, dashboard.page_url("search"), "search", render_log)
    field = page.get_by_label("User id, item id or title")
    field.fill(word)
    field.press("Enter")                                          # submitted from the keyboard
    link = page.locator(f"#item-results a[href$='/dashboard/items/{quote(item)}']")
    link.wait_for(state="attached", timeout=30_000)
    assert link.inner_text().strip() == title
    assert page.url.endswith(f"?q={quote(word)}")
    loopback_only(context)
    context.close()


@pytest.mark.parametrize("name", list(CHECKS))
def test_page_fits_a_phone_width(name, pages, dashboard, browser, render_log, tmp_path):
    url, _ = pages[name]
    context = open_context(browser, viewport=PHONE)
    page = context.new_page()
    visit(page, url, f"{name}-phone", render_log)
    widths = page.evaluate("({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})")
    assert widths["scroll"] <= widths["inner"], widths
    if name in ("overview", "user"):
        shots(page, f"{name}-phone", tmp_path)
    loopback_only(context)
    context.close()


def test_the_guard_catches_a_request_that_leaves_loopback(dashboard, browser, render_log):
    """The loopback check can fail: a fetch to another host is aborted and recorded."""
    context = open_context(browser)
    page = context.new_page()
    visit(page, dashboard.page_url(""), "overview", render_log)
    outcome = page.evaluate("fetch('http://cdn.example.invalid/chart.js').then(() => 'fetched', () => 'blocked')")
    assert outcome == "blocked"
    assert context.guard.outside == ["http://cdn.example.invalid/chart.js"]
    context.close()
