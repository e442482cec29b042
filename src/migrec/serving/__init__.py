"""The migrec service (`migrec serve`): FastAPI over a store that holds the user data and a live
model version that holds none.

    store.py      SQLite (default, one file) or PostgreSQL: events, items, versions, updates, API keys
    live.py       one servable model version: recommend (warm / cross-domain / cold), explain, interests
    updater.py    the feedback loop: partial_fit on a clone, check on held-back events, keep or reject
    app.py        the HTTP API (ServiceConfig, Service, create_app)
    bootstrap.py  a data set into an empty store, and version 1 trained on it
    auth.py       API keys and scopes;  metrics.py  Prometheus metrics

The library never imports this package.
"""
from importlib import import_module

_HOMES = {"Service": "app", "ServiceConfig": "app", "create_app": "app", "LiveModel": "live", "Store": "store",
          "StoreError": "store", "Updater": "updater", "UpdatePolicy": "updater"}


def __getattr__(name):
    """Names load on first use, so `migrec.serving.store` alone does not pull in FastAPI and torch."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)


__all__ = ["Service", "ServiceConfig", "create_app", "LiveModel", "Store", "StoreError", "Updater", "UpdatePolicy"]
