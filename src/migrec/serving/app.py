"""The migrec service: a FastAPI app over a store (user data) and a live model version (no user data).

Every recommendation is computed from the user's stored history at request time, so it reflects
the newest acknowledged event (read-your-writes) with no cache to invalidate. The live model is
one reference: a request reads it once, an update or rollback replaces it, so no request sees
half a swap. Request paths carry user ids, so the service writes no access log.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import torch
from fastapi import Body, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag

from .auth import authorise
from .feed import Feed, sse
from .live import LiveModel
from .metrics import ServiceMetrics
from .store import Store, StoreError
from .updater import UpdateBusy, Updater, UpdatePolicy

log = logging.getLogger(__name__)

PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE)]
Text = Annotated[str, StringConstraints(max_length=10_000, pattern=r"^[^\x00]*$")]
ApiKey = Annotated[str | None, Header(alias="X-API-Key")]


@dataclass
class ServiceConfig:
    data_dir: str = "migrec-data"          # store file (SQLite default) and model versions live here
    store: str | None = None               # store URL; default sqlite:///<data_dir>/store.db
    model: str | None = None               # model folder to start from when the store has no live version
    encoder: str | None = None             # encoder spec for posted item text (default: the model folder's)
    auth: bool = True                      # writes and admin calls need an API key
    auth_reads: bool = False               # reads need one too
    update_every: float = 0.0              # seconds between background update runs (0: only on request)
    update: UpdatePolicy = field(default_factory=UpdatePolicy)
    poll_seconds: float = 2.0              # how often to look for a live version set by another process
    max_history: int = 200                 # newest events a recommendation reads
    threads: int = 1                       # torch threads per request
    trending_days: float = 7.0             # cold start: popularity over the last days, all-time after
    trending_min: int = 5                  # events an item needs in that window to count as trending
    popular_ttl: float = 2.0               # seconds a popularity list is reused (cleared on deletion)
    counts_ttl: float = 5.0                # seconds the store's counts (/stats) are reused
    dashboard: bool = True                 # serve the dashboard at /dashboard/

    def store_url(self) -> str:
        return self.store or f"sqlite:///{(Path(self.data_dir) / 'store.db').resolve()}"


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    domain: Id | None = None
    type: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE)] = "interaction"
    timestamp: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)] | None = None
    event_id: Id | None = None


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: Annotated[list[EventIn], Field(min_length=1, max_length=10_000)]


def _event_shape(value) -> str:
    return "batch" if isinstance(value, dict) and "events" in value else "event"


# one event or {"events": [...]}; the tag picks the model, so an error names one shape's fields
Events = Annotated[Union[Annotated[EventBatch, Tag("batch")], Annotated[EventIn, Tag("event")]],
                   Discriminator(_event_shape)]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: Id
    domain: Id
    title: Annotated[str, StringConstraints(min_length=1, max_length=1_000, pattern=r"^[^\x00]*$")]
    fields: dict[Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
                 Text] = Field(default_factory=dict, max_length=32)


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[int, Field(ge=1)] | None = None


def json_safe(value):
    """`value` when a JSON answer can carry it, else its repr: a lone surrogate (valid JSON escape
    syntax, not text) and inf/nan (1e400) cannot be echoed back as they came."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return value
    except (TypeError, ValueError):
        return repr(value)


def invalid(loc: list, message: str) -> HTTPException:
    """A 422 in FastAPI's own error shape, naming the field."""
    return HTTPException(422, [{"loc": loc, "msg": message, "type": "value_error"}])


class Timing:
    """Request latency by route template, as plain ASGI (no per-request task and stream, as @app.middleware has)."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or \
                ("/dashboard/static" if scope["path"].startswith("/dashboard/static/") else "unmatched")
            if route != "/stream":             # a stream lasts as long as its page is open: not a latency
                self.metrics.observe(scope["method"], route, status[0], time.perf_counter() - started)


class Service:
    """The state behind the routes: store, live model, updater, metrics."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        torch.set_num_threads(max(1, config.threads))
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(config.store_url())
        self.metrics = ServiceMetrics()
        self.feed = Feed()
        self.counts_cache: tuple[float, dict] | None = None
        self.updater = Updater(self.store, self.data_dir / "versions", config.update)
        self.swap_lock = threading.Lock()
        self.popular_cache: dict = {}
        self.stop = threading.Event()
        self.last_update: dict | None = None
        version = self.store.live_version()
        if version is None:
            version = self.register_model(config.model)
        self.live: LiveModel = self.load(version)
        self.metrics.version.set(self.live.version)

    # -- versions --------------------------------------------------------------------------------
    def register_model(self, folder) -> dict:
        """Copy a model folder in as version 1 (it then belongs to the service's data directory)."""
        if folder is None:
            raise SystemExit("the store has no model yet: give a model folder (migrec serve --model DIR, "
                             "made by `migrec train`) or import a data set first (migrec import)")
        target = self.updater.next_path()
        shutil.copytree(folder, target)
        number = self.store.add_version(f"{target.parent.name}/{target.name}", events_upto=self.store.last_seq(), metrics={},
                                        note=f"imported from {folder}")
        self.store.set_live(number)
        return self.store.live_version()

    def load(self, version: dict) -> LiveModel:
        path = Path(version["path"])            # relative to the data directory (absolute ones kept)
        return LiveModel.from_dir(path if path.is_absolute() else self.data_dir / path, version["version"], store_items=self.store.items(source="api"),
                                  histories=self.store.histories, encoder=self.config.encoder)

    def swap(self, live: LiveModel) -> None:
        """Make `live` the served version; items posted while it was loading are added first."""
        with self.swap_lock:
            missing = [row for row in self.store.items(source="api") if not live.has_item(row["item_id"])]
            if missing:
                live = live.with_items(missing, [row["vector"] for row in missing])
            self.live = live
        self.metrics.version.set(live.version)
        self.metrics.swaps.inc()
        self.feed.publish("version", {"model_version": live.version})

    def update_now(self, wait: bool = True) -> dict:
        """One update cycle now; wait=False raises UpdateBusy instead of waiting for a running one."""
        record = self.updater.run(self.live, wait=wait)
        self.metrics.updates.labels(record["decision"]).inc()
        if record["decision"] == "swapped":
            self.swap(self.load(self.store.live_version()))
        self.last_update = record
        self.feed.publish("update", {"decision": record["decision"], "model_version": self.live.version})
        return record

    def retrain(self) -> dict:
        """A fresh version trained on the store as it is now (runs under the updater's lock)."""
        with self.updater.lock:
            return self._retrain_locked()

    def _retrain_locked(self) -> dict:
        from .bootstrap import retrain_version

        started = time.time()
        before = self.live.version
        row = retrain_version(self.store, self.data_dir, self.live)
        self.swap(self.load(row))
        record = {"started": started, "seconds": time.time() - started, "from_version": before,
                  "to_version": row["version"], "events": int(row["events_upto"]), "metrics_before": {},
                  "metrics_after": row["metrics"], "decision": "retrained", "note": row["note"]}
        record["id"] = self.store.add_update(record)
        self.metrics.updates.labels("retrained").inc()
        self.feed.publish("update", {"decision": "retrained", "model_version": self.live.version})
        return record

    def start_retrain(self) -> bool:
        """Run `retrain` in a background thread; False when an update or retrain is already running.
        The lock is taken here, before the thread starts, so two calls cannot both start one."""
        if not self.updater.lock.acquire(blocking=False):
            return False

        def job():
            try:
                self._retrain_locked()
            except Exception:              # reported in the log; the live version keeps serving
                log.exception("retrain failed")
            finally:
                self.updater.lock.release()

        try:
            threading.Thread(target=job, name="migrec-retrain", daemon=True).start()
        except BaseException:
            self.updater.lock.release()
            raise
        return True

    def rollback(self, version: int | None) -> dict:
        versions = {v["version"]: v for v in self.store.versions()}
        current = self.live.version
        if version is None:
            version = versions.get(current, {}).get("parent")
            if version is None:
                raise HTTPException(409, f"version {current} has no earlier version to roll back to")
        if version not in versions:
            raise invalid(["body", "version"], f"no model version {version}")
        if version == current:
            raise HTTPException(409, f"version {version} is already live")
        live = self.load(versions[version])
        self.store.set_live(version)
        self.store.set_status(current, "rolled-back")
        self.swap(live)
        return {"from_version": current, "to_version": version}

    def background(self) -> None:
        """Follow live versions set by other processes; run updates every `update_every` seconds."""
        next_update = time.time() + self.config.update_every
        while not self.stop.wait(self.config.poll_seconds):
            try:
                live = self.store.live_version()
                if live is not None and live["version"] != self.live.version:
                    self.swap(self.load(live))
                self.feed.catch_up(self.store)
                if self.config.update_every > 0 and time.time() >= next_update:
                    self.update_now()
                    next_update = time.time() + self.config.update_every
            except Exception:                  # the loop must outlive one failed run; the failure is logged
                log.exception("background update/poll failed")

    # -- reads -------------------------------------------------------------------------------------
    def counts(self) -> dict:
        """The store's counts (users, events, items, domains, last_seq), reused for `counts_ttl` seconds:
        they scan the whole log."""
        hit = self.counts_cache
        if hit is None or time.monotonic() - hit[0] >= self.config.counts_ttl:
            hit = self.counts_cache = (time.monotonic(), self.store.counts())
        return hit[1]

    def popular(self, domain, k, exclude) -> list:
        key = (domain, k, tuple(sorted(exclude)))
        hit = self.popular_cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.config.popular_ttl:
            return hit[1]
        since = math.floor(time.time() / 86400 - self.config.trending_days)
        rows = [r for r in self.store.popular(domain, k, since_day=since, exclude=exclude)
                if r[1] >= self.config.trending_min]
        if len(rows) < k:                      # not enough recent activity: fill with all-time popularity
            taken = {item for item, _ in rows}
            rows += [r for r in self.store.popular(domain, k + len(taken), exclude=exclude)
                     if r[0] not in taken][:k - len(rows)]
        self.popular_cache[key] = (time.monotonic(), rows)
        return rows


def create_app(config: ServiceConfig | None = None, service: Service | None = None) -> FastAPI:
    service = service or Service(config or ServiceConfig())
    cfg = service.config

    @asynccontextmanager
    async def lifespan(app):
        thread = threading.Thread(target=service.background, name="migrec-background", daemon=True)
        thread.start()
        yield
        service.stop.set()
        thread.join(timeout=30)

    app = FastAPI(title="migrec", version="1", lifespan=lifespan,
                  description="Recommendations that follow users' interests: events in, recommendations, "
                              "explanations, interests and deletion out.")
    app.state.service = service

    def need(scope: str, key: str | None) -> None:
        if scope == "read" and not cfg.auth_reads:
            return
        authorise(service.store, key, scope, cfg.auth)

    app.add_middleware(Timing, metrics=service.metrics)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError):
        # FastAPI's own answer, with each rejected input made safe to echo (else rendering it was a 500)
        errors = [{k: [json_safe(p) for p in v] if k == "loc" else json_safe(v) for k, v in e.items()}
                  for e in jsonable_encoder(exc.errors())]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    # -- events ------------------------------------------------------------------------------------
    @app.post("/events", summary="Store one event or a batch; acknowledged after a durable commit")
    def post_events(body: Annotated[Events, Body()], x_api_key: ApiKey = None):
        need("write", x_api_key)
        events = body.events if isinstance(body, EventBatch) else [body]
        live, now, rows = service.live, time.time(), []
        for i, e in enumerate(events):
            loc = ["body", "events", i] if isinstance(body, EventBatch) else ["body"]
            domain = live.domain_of(e.item_id)
            if domain is None:
                raise invalid(loc + ["item_id"], f"unknown item {e.item_id!r}: post it to /items first")
            if e.domain is not None and e.domain != domain:
                raise invalid(loc + ["domain"], f"item {e.item_id!r} belongs to domain {domain!r}, not {e.domain!r}")
            rows.append({"user_id": e.user_id, "item_id": e.item_id, "domain": domain, "event": e.type,
                         "timestamp": now if e.timestamp is None else e.timestamp, "event_id": e.event_id})
        result = service.store.add_events(rows)
        service.metrics.ingested(result["accepted"])
        service.feed.events(rows, result["last_seq"])
        service.metrics.duplicates.inc(result["duplicates"])
        return {"accepted": result["accepted"], "duplicates": result["duplicates"], "last_seq": result["last_seq"]}

    # -- users -------------------------------------------------------------------------------------
    @app.get("/users/{user_id}/recommendations", summary="Top-k for a user from their stored history")
    def recommendations(user_id: Annotated[str, PathParam(max_length=256, pattern=PRINTABLE)],
                        k: Annotated[int, Query(ge=1, le=1000)] = 10,
                        domain: Annotated[str | None, Query(max_length=256, pattern=PRINTABLE)] = None,
                        exclude: Annotated[str | None, Query(max_length=100_000)] = None,
                        explain: bool = False, x_api_key: ApiKey = None):
        need("read", x_api_key)
        live = service.live
        if domain is not None and domain not in live.domains():
            raise invalid(["query", "domain"], f"unknown domain {domain!r}; known: {sorted(live.domains())}")
        # every event up to the store's newest seq is visible to the read that follows (writers commit
        # in seq order), so as_of_seq >= a write's acknowledged last_seq proves the answer includes it
        as_of = service.store.last_seq()
        history = service.store.history(user_id, limit=cfg.max_history)
        skip = [x for x in (exclude or "").split(",") if x]
        answer = live.recommend([(h[1], h[2], h[4]) for h in history], k=k, domain=domain, exclude=skip,
                                explain=explain, popular=service.popular)
        service.metrics.paths.labels(answer["path"]).inc()
        return {"user_id": user_id, "model_version": live.version, "as_of_seq": max([as_of] + [h[0] for h in history[-1:]]),
                **answer}

    @app.get("/users/{user_id}/history", summary="The user's stored events, oldest first")
    def history(user_id: Annotated[str, PathParam(max_length=256, pattern=PRINTABLE)],
                limit: Annotated[int, Query(ge=1, le=100_000)] = 1000, x_api_key: ApiKey = None):
        need("read", x_api_key)
        live = service.live
        rows = service.store.history(user_id, limit=limit)
        return {"user_id": user_id, "events": [
            {"seq": s, "item_id": i, "title": live.title_of(i), "domain": d,
             "type": t, "timestamp": ts} for s, i, d, t, ts in rows]}

    @app.get("/users/{user_id}/interests", summary="Long/short-term interests, migrations, blend weight")
    def interests(user_id: Annotated[str, PathParam(max_length=256, pattern=PRINTABLE)], x_api_key: ApiKey = None):
        need("read", x_api_key)
        live = service.live
        history = service.store.history(user_id)
        return {"user_id": user_id, "model_version": live.version,
                **live.interests([(h[1], h[2], h[4]) for h in history])}

    @app.delete("/users/{user_id}", summary="Erase the user: events and everything derived from them")
    def delete_user(user_id: Annotated[str, PathParam(max_length=256, pattern=PRINTABLE)], x_api_key: ApiKey = None):
        need("write", x_api_key)
        first = service.store.history(user_id, limit=None)[:1]
        removed = service.store.delete_user(user_id)
        service.popular_cache.clear()
        service.counts_cache = None
        if removed == 0:
            raise HTTPException(404, "no such user")
        service.metrics.deletions.inc()
        # every version trained on events up to or past the user's first one learnt from them (no id of
        # theirs is in any artifact, but the weights carry their influence until POST /admin/retrain)
        learnt = [v["version"] for v in service.store.versions() if v["events_upto"] >= first[0][0]]
        return {"deleted_events": removed, "in_model_versions": learnt}

    # -- items -------------------------------------------------------------------------------------
    @app.post("/items", status_code=201, summary="Add an item by its text; recommendable at once")
    def post_item(item: ItemIn, x_api_key: ApiKey = None):
        need("write", x_api_key)
        row = {"item_id": item.item_id, "domain": item.domain, "title": item.title, "fields": item.fields,
               "source": "api"}
        with service.swap_lock:
            live = service.live
            if live.has_item(item.item_id) or service.store.get_item(item.item_id) is not None:
                raise HTTPException(409, f"item {item.item_id!r} already exists")
            if not live.takes_items:
                raise HTTPException(409, f"the live model ({live.model.name}) cannot take new items without "
                                         f"retraining; serve a text model (interest-text, interest-text+id)")
            try:
                vector = live.encode_items([row])[0]
                grown = live.with_items([row], [vector])
            except ValueError as exc:
                raise HTTPException(409, str(exc)) from None
            service.store.add_items([{**row, "vector": vector, "encoder": live.encoder_id}])
            service.live = grown
        return grown.item(item.item_id)

    @app.get("/items/{item_id}", summary="One item: text, domain, whether it is cold, popularity by day")
    def get_item(item_id: Annotated[str, PathParam(max_length=256, pattern=PRINTABLE)], x_api_key: ApiKey = None):
        need("read", x_api_key)
        live = service.live
        if not live.has_item(item_id):
            raise HTTPException(404, f"no item {item_id!r}")
        days = service.store.item_counts_by_day(item_id)
        return {**live.item(item_id), "events": sum(c for _, c in days),
                "by_day": [{"day": d, "count": c} for d, c in days]}

    @app.get("/items/{item_id}/similar", summary="Items nearest to this one in the model's item space")
    def similar(item_id: Annotated[str, PathParam(max_length=256, pattern=PRINTABLE)],
                k: Annotated[int, Query(ge=1, le=1000)] = 10, x_api_key: ApiKey = None):
        need("read", x_api_key)
        live = service.live
        if not live.has_item(item_id):
            raise HTTPException(404, f"no item {item_id!r}")
        return {"item_id": item_id, "model_version": live.version, "items": live.similar(item_id, k=k)}

    # -- operations --------------------------------------------------------------------------------
    @app.get("/healthz", summary="The process answers")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="A model is loaded and the store answers")
    def readyz():
        try:
            seq = service.store.last_seq()
        except Exception as exc:   # any store failure means not ready; the reason is reported
            return JSONResponse({"status": "store unavailable", "error": type(exc).__name__}, status_code=503)
        return {"status": "ready", "model_version": service.live.version, "last_seq": seq}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def metrics():
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/stats", summary="Counts, the live version and request figures (for the dashboard)")
    def stats(x_api_key: ApiKey = None):
        need("read", x_api_key)
        live = service.live
        version = next((v for v in service.store.versions() if v["version"] == live.version), {})
        return {**service.counts(), "model_version": live.version, "model": {
                    "version": live.version, "kind": live.model.name, "items": len(live.model.item_ids_),
                    "domains": live.domains(), "encoder": live.encoder_id, "metrics": version.get("metrics", {}),
                    "created": version.get("created"), "events_upto": version.get("events_upto")},
                "metrics": service.metrics.snapshot(), "recent": service.metrics.recent(),
                "last_update": (service.store.updates(1) or [None])[0]}

    @app.get("/search", summary="Users by id prefix and items by id or title text")
    def search(q: Annotated[str, Query(min_length=1, max_length=256, pattern=PRINTABLE)],
               limit: Annotated[int, Query(ge=1, le=200)] = 20, x_api_key: ApiKey = None):
        need("read", x_api_key)
        return {"q": q, "users": service.store.users(prefix=q.strip(), limit=limit),
                "items": service.live.search_items(q, limit=limit)}

    @app.get("/stream", summary="Server-sent events: new events (one user's with user_id, else counts), "
                                "model swaps and update runs")
    async def stream(request: Request, user_id: Annotated[str | None, Query(max_length=256, pattern=PRINTABLE)] = None,
                     x_api_key: ApiKey = None):
        await run_in_threadpool(need, "read", x_api_key)
        sub = service.feed.subscribe(user_id)

        async def messages():
            try:
                yield sse("hello", {"model_version": service.live.version, "user_id": user_id})
                idle = 0.0
                while not service.stop.is_set():
                    try:
                        kind, payload = await asyncio.wait_for(sub.queue.get(), timeout=1.0)
                    except asyncio.TimeoutError:
                        idle += 1.0
                        if idle >= 15:                   # a comment keeps proxies from closing the stream
                            idle = 0.0
                            if await request.is_disconnected():
                                break
                            yield ": keep-alive\n\n"
                        continue
                    idle = 0.0
                    yield sse(kind, payload)
            finally:
                service.feed.unsubscribe(sub)

        return StreamingResponse(messages(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/admin/versions", summary="Every model version with its metrics")
    def versions(x_api_key: ApiKey = None):
        need("read", x_api_key)
        return {"live": service.live.version, "versions": service.store.versions()}

    @app.get("/admin/updates", summary="The update runs, newest first")
    def updates(limit: Annotated[int, Query(ge=1, le=1000)] = 50, x_api_key: ApiKey = None):
        need("read", x_api_key)
        return {"updates": service.store.updates(limit)}

    @app.post("/admin/update", summary="Run one update now: partial_fit, check, swap if not worse")
    def update(x_api_key: ApiKey = None):
        need("admin", x_api_key)
        try:
            return service.update_now(wait=False)   # a retrain or another update holds the lock: answer now
        except UpdateBusy as busy:
            raise HTTPException(409, str(busy)) from None

    @app.post("/admin/retrain", status_code=202,
              summary="Train a fresh version on the store as it is now (after deletions); runs in the background")
    def retrain(x_api_key: ApiKey = None):
        need("admin", x_api_key)
        if not service.start_retrain():
            raise HTTPException(409, "an update or retrain is already running")
        return {"status": "started", "live_version": service.live.version}

    @app.post("/admin/rollback", summary="Make an earlier version live (default: the live one's parent)")
    def rollback(body: Annotated[RollbackIn | None, Body()] = None, x_api_key: ApiKey = None):
        need("admin", x_api_key)
        return service.rollback(body.version if body else None)

    if cfg.dashboard:
        from .dashboard import mount_dashboard

        mount_dashboard(app, service, PRINTABLE)
    return app
