"""The dashboard in a real browser: one `migrec serve` process on loopback over the small world of
tests/servicekit.py (a private copy, a write key and an admin key), Debian's headless chromium
driven by Playwright, and helpers to open pages, time them and take screenshots.

The browser helpers themselves (launch, render_ms, the loopback guard, screenshots) live in
benchmarks/_browser.py, shared with benchmarks/run_dashboard.py; this module puts that folder on
sys.path. Without chromium or Playwright the browser tests skip, except under CI=true, where
they fail (there they are required).

Fixtures (import them into a test module): `dashboard` (the server, session-scoped), `browser`
(session-scoped), `render_log` (page -> render ms, printed at the end of the run).
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import servicekit_proc as kit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _browser import (CHROMIUM, LAPTOP, PHONE, LoopbackGuard, is_loopback, launch,  # noqa: E402,F401
                      render_ms, screenshot)

DOCS = REPO / "docs" / "dashboard"


def require_browser():
    """playwright's sync API, when it and chromium are there; else skip (fail under CI=true)."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        problem = f"playwright is not installed ({exc}); `make install` installs the test extra"
    if problem is None and not Path(CHROMIUM).exists():
        problem = f"no chromium at {CHROMIUM}; `make install` installs Debian's chromium"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return sync_playwright


@dataclass
class Dashboard:
    """The running server and what the tests need to know about its world."""
    server: kit.ServerProcess
    keys: dict
    data_dir: Path
    domains: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def page_url(self, path: str = "") -> str:
        return f"{self.url}/dashboard/{path}"

    def api(self) -> httpx.Client:
        return self.server.client()

    def get(self, path: str, **params) -> dict:
        with self.api() as client:
            return kit.ok(client.get(path, params=params))

    def post(self, path: str, body=None, scope: str = "write", status: int = 200) -> dict:
        with self.api() as client:
            return kit.ok(client.post(path, json=body, headers={"X-API-Key": self.keys[scope]}), status)


@pytest.fixture(scope="session")
def dashboard(shared_data, tmp_path_factory):
    """`migrec serve` on a private copy of the small world; updates need 20 new events."""
    require_browser()
    world = kit.world_dir(shared_data, tmp_path_factory)
    root = tmp_path_factory.mktemp("dashboard")
    data_dir = kit.fresh_copy(world, root / "svc")
    keys = kit.add_keys(kit.sqlite_url(data_dir))
    server = kit.ServerProcess(data_dir, root / "server.log", args=["--update-min-events", "20"]).start()
    try:
        yield Dashboard(server, keys, data_dir, kit.items_by_domain(data_dir))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    sync_playwright = require_browser()
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def open_context(browser, viewport=LAPTOP, api_key: str | None = None):
    """A fresh browser context (its own sessionStorage) at `viewport`, guarded: every request that
    does not go to 127.0.0.1 is aborted and recorded (`context.guard.outside`)."""
    context = browser.new_context(viewport=viewport, reduced_motion="reduce")
    context.guard = LoopbackGuard(context, block=True)
    if api_key is not None:
        context.add_init_script(f"sessionStorage.setItem('migrec-api-key', {api_key!r});")
    return context


def shots(page, name: str, tmp_path: Path) -> list[Path]:
    """A full-page screenshot into tmp_path, and into docs/dashboard/ when MIGREC_SCREENSHOTS=1."""
    folders = [tmp_path]
    if os.environ.get("MIGREC_SCREENSHOTS") == "1":
        folders.append(DOCS)
    return screenshot(page, name, folders)


@pytest.fixture(scope="session")
def render_log(request):
    """page name -> [render ms]; written to the terminal when the session ends (times are
    reported, never asserted: speed is measured by benchmarks/run_dashboard.py)."""
    times: dict[str, list[float]] = {}
    yield times
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if times and reporter is not None:
        parts = ", ".join(f"{name} {min(v):.0f}-{max(v):.0f} ms (n={len(v)})" for name, v in times.items())
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            reporter.write_line(f"\ndashboard render_ms on the small world (min-max): {parts}")
