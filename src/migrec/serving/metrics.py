"""Prometheus metrics of one service instance (its own registry, so apps in one process do not mix)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        return out
