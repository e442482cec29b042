"""`migrec serve | import | update | keys`: the live service and its store from the command line.

    migrec import --dataset ml-100k            store a data set and train version 1 (data dir ./migrec-data)
    migrec serve                               serve the store's live version on 127.0.0.1:8000
    migrec serve --dataset ml-100k             the two above in one command, on an empty store
                                               (--train-model NAME picks the model, default interest-text+id)
    migrec serve --model DIR                   serve a folder written by `migrec train`
    migrec update                              one feedback-loop run (a running service picks the result up)
    migrec keys create --name app --scope write
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import data_args, encoder_args, model_params, train_args


def store_args(p) -> None:
    p.add_argument("--data-dir", default="migrec-data", help="store file and model versions (default ./migrec-data)")
    p.add_argument("--store", default=None, help="store URL: sqlite:///FILE (default <data-dir>/store.db) or "
                                                "postgresql://USER@HOST:PORT/DB")


def config_from(args):
    from ..serving import ServiceConfig, UpdatePolicy

    policy = UpdatePolicy(min_events=getattr(args, "update_min_events", 50))
    return ServiceConfig(data_dir=args.data_dir, store=args.store, model=getattr(args, "model_dir", None),
                         encoder=getattr(args, "serve_encoder", None), auth=not getattr(args, "no_auth", False),
                         auth_reads=getattr(args, "auth_reads", False),
                         update_every=getattr(args, "update_every", 0.0), update=policy,
                         threads=getattr(args, "threads", 1), dashboard=not getattr(args, "no_dashboard", False))


def open_store(args):
    from ..serving import Store

    return Store.open(config_from(args).store_url())


def run_import(args, store) -> dict:
    from ..serving.bootstrap import import_dataset

    from .. import pipeline

    params = model_params(args.model, args)
    return import_dataset(store, Path(args.data_dir) / "versions", args.dataset, args.path, model=args.model,
                          blend=not args.no_blend, encoder=args.encoder, template=args.template, params=params,
                          cache_dir=pipeline.cache_dir_for(args.cache))


def cmd_import(args) -> None:
    store = open_store(args)
    try:
        version = run_import(args, store)
    except ValueError as exc:
        raise SystemExit(f"migrec import: {exc}") from None
    print(f"imported {args.dataset}: {store.counts()}; live model version {version['version']} at {version['path']}")


def cmd_serve(args) -> None:
    import uvicorn

    from ..serving import create_app

    store = open_store(args)
    if store.live_version() is None and args.model_dir is None:
        if any(a == "--dataset" or a.startswith("--dataset=") for a in getattr(args, "argv", [])):
            print(f"empty store: importing {args.dataset} and training {args.model} first", file=sys.stderr)
            run_import(args, store)
        else:
            raise SystemExit("the store has no model: give --model DIR (from `migrec train`) or --dataset NAME "
                             "[--path DIR] to import a data set and train one")
    store.close()
    app = create_app(config_from(args))
    if not args.no_auth:
        print("writes need an API key (X-API-Key); create one with `migrec keys create --name NAME`",
              file=sys.stderr)
    # no access log: request paths carry user ids, and a deleted user must leave no trace
    # open dashboard streams (GET /stream) would hold a graceful shutdown forever: they get 3 s
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning",
                timeout_graceful_shutdown=3)


def cmd_update(args) -> None:
    from ..serving import Service

    service = Service(config_from(args))
    record = service.update_now()
    print(json.dumps(record, indent=1, default=str))


def cmd_keys(args) -> None:
    store = open_store(args)
    if args.action == "create":
        token = store.create_key(args.name, args.scope)
        print(token)
        print(f"key {args.name!r} ({args.scope}) created; it is shown only this once", file=sys.stderr)
    else:
        store.revoke_key(args.name)
        print(f"key {args.name!r} revoked", file=sys.stderr)


def add_parsers(sub) -> None:
    p = sub.add_parser("import", help="store a data set's catalogue and log, train and register version 1")
    _import_args(p, "--model")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("serve", help="run the REST service (FastAPI) on the store's live model")
    _import_args(p, "--train-model")
    p.add_argument("--model", dest="model_dir", default=None, help="model folder from `migrec train` "
                                                                   "(used when the store has no live version)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-auth", action="store_true", help="no API keys needed (loopback experiments only)")
    p.add_argument("--auth-reads", action="store_true", help="reads need an API key too")
    p.add_argument("--no-dashboard", action="store_true", help="serve the JSON API only (no /dashboard pages)")
    p.add_argument("--update-every", type=float, default=0.0, help="seconds between background update runs (0: off)")
    p.add_argument("--update-min-events", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads per request")
    p.add_argument("--serve-encoder", default=None, help="encoder spec for posted item text (default: the model's)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("update", help="one feedback-loop run: partial_fit, check, make live if not worse")
    store_args(p)
    p.add_argument("--update-min-events", type=int, default=50)
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("keys", help="create or revoke API keys")
    p.add_argument("action", choices=["create", "revoke"])
    p.add_argument("--name", required=True)
    p.add_argument("--scope", default="write", choices=["write", "admin"])
    store_args(p)
    p.set_defaults(func=cmd_keys)


def _import_args(p, model_flag: str) -> None:
    store_args(p)
    data_args(p)
    encoder_args(p)
    train_args(p)
    p.add_argument(model_flag, dest="model", default="interest-text+id", help="model to train on import")
    p.add_argument("--no-blend", action="store_true", help="do not wrap the model in the migration-aware blend")
