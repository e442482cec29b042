"""Prometheus metrics of one service instance (its own registry, so apps in one process do not mix),
and the recent-window figures the dashboard shows (exact latency percentiles, events per minute)."""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

RECENT_REQUESTS = 20_000     # requests the recent window keeps at most
MINUTES = 60                 # minutes of the events-per-minute series
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("migrec_request_seconds", "Request latency by route template",
                                 ("method", "route", "status"), buckets=BUCKETS, registry=r)
        self.events = Counter("migrec_events_ingested_total", "Events stored (duplicates not counted)",
                              registry=r)
        self.duplicates = Counter("migrec_events_duplicate_total", "Events skipped as repeats of an event_id",
                                  registry=r)
        self.paths = Counter("migrec_recommendations_total", "Recommendation requests by serving path",
                             ("path",), registry=r)
        self.version = Gauge("migrec_model_version", "The live model version", registry=r)
        self.updates = Counter("migrec_update_runs_total", "Update runs by decision", ("decision",), registry=r)
        self.swaps = Counter("migrec_model_swaps_total", "Live model swaps (updates, rollbacks, reloads)",
                             registry=r)
        self.deletions = Counter("migrec_user_deletions_total", "Users erased", registry=r)
        self._lock = threading.Lock()
        self._recent: deque = deque(maxlen=RECENT_REQUESTS)    # (monotonic time, route, seconds)
        self._minutes: dict[int, int] = {}                     # epoch minute -> events ingested

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One finished request: the Prometheus histogram and the recent window."""
        self.latency.labels(method, route, str(status)).observe(seconds)
        with self._lock:
            self._recent.append((time.monotonic(), f"{method} {route}", seconds))

    def ingested(self, count: int, now: float | None = None) -> None:
        """`count` events stored now: the counter and the per-minute series (the last hour kept)."""
        self.events.inc(count)
        minute = int((time.time() if now is None else now) // 60)
        with self._lock:
            self._minutes[minute] = self._minutes.get(minute, 0) + int(count)
            for old in [m for m in self._minutes if m <= minute - MINUTES]:
                del self._minutes[old]

    def recent(self, window: float = 300.0, now: float | None = None) -> dict:
        """Over the last `window` seconds: per route "METHOD template" the request count and the exact
        p50/p95/p99 latency in ms; and events ingested per minute over the last hour (oldest first,
        minutes with none included)."""
        now_wall = time.time() if now is None else now
        since = time.monotonic() - window
        with self._lock:
            recent = [(route, s) for t, route, s in self._recent if t >= since]
            minutes = dict(self._minutes)
        by_route: dict[str, list] = {}
        for route, s in recent:
            by_route.setdefault(route, []).append(s * 1000.0)
        latency = {}
        for route, values in sorted(by_route.items()):
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            latency[route] = {"count": len(values), "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}
        last = int(now_wall // 60)
        per_minute = [{"minute": m * 60, "events": minutes.get(m, 0)} for m in range(last - MINUTES + 1, last + 1)]
        return {"window_seconds": window, "latency": latency, "events_per_minute": per_minute}

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict:
        """The counters and latency quantiles as plain numbers (for the dashboard and tests)."""
        out: dict = {"requests": {}, "paths": {}, "updates": {}}
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == "migrec_events_ingested_total":
                    out["events_ingested"] = s.value
                elif s.name == "migrec_recommendations_total":
                    out["paths"][s.labels["path"]] = s.value
                elif s.name == "migrec_update_runs_total":
                    out["updates"][s.labels["decision"]] = s.value
                elif s.name == "migrec_request_seconds_count":
                    key = f'{s.labels["method"]} {s.labels["route"]}'
                    out["requests"][key] = out["requests"].get(key, 0) + s.value
        served = sum(out["paths"].values())
        out["cold_share"] = out["paths"].get("cold", 0) / served if served else None
        return out
