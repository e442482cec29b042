"""The one copy of what drives the dashboard from a real browser, shared by the browser tests
(tests/browserkit.py puts this folder on sys.path) and benchmarks/run_dashboard.py.

- `launch(playwright)`: Debian's headless chromium (`/usr/bin/chromium`, or $MIGREC_CHROMIUM) through
  Playwright's `executable_path`; Playwright's own browser download is never used. Host names other
  than loopback do not resolve in it (`--host-resolver-rules`), so a page cannot reach the internet
  even where the machine could.
- `render_ms(page, url)`: load a page and wait until it says it is drawn (`body[data-ready=true]`);
  returns `window.migrecReadyMs`, the page's own ms since navigation start.
- `LoopbackGuard`: records every request a browser context makes; with `block=True` it also routes each
  request that does not go to 127.0.0.1 (or is not data:/blob:) to abort.
- `screenshot(page, name, folders)`: a PNG of the whole page into each folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("MIGREC_CHROMIUM", "/usr/bin/chromium")
LOOPBACK = "127.0.0.1"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
READY = "body[data-ready='true']"
PAGES = ("overview", "user", "item", "models", "search")


def launch(playwright, **kw):
    """Headless Debian chromium via Playwright (raises with a clear message when it is missing)."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"no chromium at {CHROMIUM}: `make install` installs Debian's chromium "
                                f"(apt-get install chromium), or set MIGREC_CHROMIUM")
    args = [f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOOPBACK}", *kw.pop("args", [])]
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args, **kw)


def render_ms(page, url: str, timeout_ms: float = 60_000) -> float:
    """Open `url`, wait for body[data-ready=true]; the page's window.migrecReadyMs (ms since navigation start)."""
    page.goto(url, wait_until="commit", timeout=timeout_ms)
    page.wait_for_selector(READY, state="attached", timeout=timeout_ms)
    value = page.evaluate("window.migrecReadyMs")
    if not isinstance(value, (int, float)):
        raise AssertionError(f"{url}: body[data-ready=true] but window.migrecReadyMs is {value!r}")
    return float(value)


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == LOOPBACK


class LoopbackGuard:
    """Every request of a browser context (`requests`) and those that left loopback (`outside`).

    block=True routes every request through a handler that aborts the non-loopback ones (the
    tests); block=False only listens (the benchmark: routing every request would slow the pages
    it times; the browser's resolver rules still keep it on loopback)."""

    def __init__(self, context, block: bool = True):
        self.requests: list[str] = []
        self.outside: list[str] = []
        context.on("request", self._seen)
        if block:
            context.route("**/*", self._route)

    def _seen(self, request) -> None:
        self.requests.append(request.url)
        if not is_loopback(request.url):
            self.outside.append(request.url)

    def _route(self, route) -> None:
        if is_loopback(route.request.url):
            route.continue_()
        else:
            route.abort("blockedbyclient")


def screenshot(page, name: str, folders) -> list[Path]:
    """A full-page PNG `<name>.png` in each folder (created if needed); the paths written."""
    data = page.screenshot(full_page=True, animations="disabled")
    out = []
    for folder in folders:
        path = Path(folder) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(path)
    return out


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))
