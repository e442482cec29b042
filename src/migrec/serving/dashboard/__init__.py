"""The dashboard: server-rendered page shells (Jinja2) whose small scripts read the service's own
JSON API and draw with Chart.js, shipped in static/vendor (nothing is fetched from the internet).

Pages: / (overview), /users/{id}, /items/{id}, /models, /search, all under /dashboard. The pages
carry no data of their own: every figure comes from the same endpoints an API client calls, with
the API key the person types (kept in the tab's sessionStorage), and live updates come from
GET /stream. Why server-rendered shells and no npm build: docs/architecture.md.
"""

import hashlib
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
PAGES = (("overview", "Overview", "/dashboard/"), ("models", "Models", "/dashboard/models"),
         ("search", "Search", "/dashboard/search"))


class CachedStatic(StaticFiles):
    """Static files a browser may keep for a day: their URLs carry the assets' hash (?v=), so a new
    release is fetched anew."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=86400, immutable"
        return response


def assets_hash() -> str:
    """A short hash of the static files' contents (the ?v= of their URLs)."""
    digest = hashlib.sha256()
    for file in sorted((HERE / "static").rglob("*")):
        if file.is_file():
            digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()[:12]


# no `from __future__ import annotations` here: the routes' path annotations use mount_dashboard's
# id_pattern, which FastAPI can only read from annotations evaluated where the routes are defined
def mount_dashboard(app: FastAPI, service, id_pattern: str, prefix: str = "/dashboard") -> None:
    """Add the dashboard's pages and static files to the service's app; `id_pattern`: the API's
    pattern for user and item ids in paths."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount(f"{prefix}/static", CachedStatic(directory=str(HERE / "static")), name="dashboard-static")
    assets = assets_hash()

    def page(request: Request, name: str, title: str, status: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, f"{name}.html", {
            "page": name, "title": title, "pages": PAGES, "prefix": prefix,
            "version": service.live.version, "auth_reads": service.config.auth_reads, "assets": assets,
            **context},
            status_code=status, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse(f"{prefix}/")

    @app.get(f"{prefix}/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request):
        return page(request, "overview", "Overview")

    @app.get(f"{prefix}/models", response_class=HTMLResponse, include_in_schema=False)
    def models(request: Request):
        return page(request, "models", "Models")

    @app.get(f"{prefix}/search", response_class=HTMLResponse, include_in_schema=False)
    def search(request: Request, q: str = ""):
        return page(request, "search", "Search", q=q[:256])

    @app.get(f"{prefix}/users/{{user_id}}", response_class=HTMLResponse, include_in_schema=False)
    def user(request: Request, user_id: Annotated[str, PathParam(max_length=256, pattern=id_pattern)]):
        return page(request, "user", f"User {user_id}", user_id=user_id, domains=service.live.domains())

    @app.get(f"{prefix}/items/{{item_id}}", response_class=HTMLResponse, include_in_schema=False)
    def item(request: Request, item_id: Annotated[str, PathParam(max_length=256, pattern=id_pattern)]):
        if not service.live.has_item(item_id):
            return page(request, "missing", "Not found", status=404, what=f"item {item_id}")
        return page(request, "item", f"Item {item_id}", item_id=item_id)
