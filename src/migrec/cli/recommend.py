"""`migrec recommend`: top-k from a saved model for a user of a data set, or for a history typed in.

The model folder holds no user data. A user's history is read from the data set the model
was trained on (named in the folder's data.json; `--dataset/--path` point elsewhere), or
given directly with `--history ITEM,ITEM,...` (oldest first).
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import pipeline
from .common import show_recommendations
from .core import CATALOGUE_FILE, DATA_FILE


def load_model_dir(folder):
    """The model in a folder written by `migrec train` (SystemExit naming the problem otherwise)."""
    from ..models.artifact import ArtifactError
    from ..registry import load_model

    try:
        return load_model(folder)
    except ArtifactError as exc:
        raise SystemExit(f"--model-dir: {exc}") from None


def data_source(args) -> tuple[str, str | None]:
    """(loader name, path) of the data set that holds the users' histories."""
    pointer = {}
    file = Path(args.model_dir) / DATA_FILE
    if file.exists():
        pointer = json.loads(file.read_text())
    kind = args.dataset or pointer.get("dataset")
    if kind is None:
        raise SystemExit(f"{file} is missing, so the data set with the users' histories is unknown: "
                         f"pass --dataset and --path, or give --history ITEM,ITEM,...")
    path = args.path if (args.path is not None or args.dataset) else pointer.get("path")
    return kind, path


def user_history(args) -> tuple[list, str]:
    """(raw item ids oldest first, a label) for `--user` from the data set."""
    from ..data import Histories

    kind, path = data_source(args)
    try:
        dataset = pipeline.load_dataset(kind, path)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"cannot read the {kind} data set at {path}: {exc}") from None
    histories = Histories.from_frame(dataset.interactions)
    user = str(args.user)
    if user not in histories:
        examples = ", ".join(histories.users()[:3])
        raise SystemExit(f"--user {user!r}: no such user in the {kind} data set at {path} "
                         f"({len(histories)} users; ids look like {examples})")
    return list(histories[user]), f"User {user}"


def typed_history(model, text: str) -> tuple[list, str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise SystemExit("--history is empty: give item ids, oldest first, e.g. --history 50,181,258")
    unknown = [i for i in items if len(model.item_index([i], unknown="drop")) == 0]
    if unknown:
        raise SystemExit(f"--history: unknown item{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:10])} "
                         f"(the model knows {model.n_items} items)")
    return items, "Given history"


def cmd_recommend(args) -> None:
    import pandas as pd

    if args.k < 1:
        raise SystemExit(f"-k must be at least 1, not {args.k}")
    model = load_model_dir(args.model_dir)
    file = Path(args.model_dir) / CATALOGUE_FILE
    catalogue = pd.read_parquet(file) if file.exists() else None
    if args.history is not None:
        history, who = typed_history(model, args.history)
    else:
        history, who = user_history(args)
    show_recommendations(model, catalogue, history, who=who, k=args.k, explain=not args.no_explain)


def add_parser(sub) -> None:
    p = sub.add_parser("recommend", help="top-k for a user (or a given history) from a saved model, "
                                         "with titles and why")
    p.add_argument("--model-dir", required=True, help="a folder written by `migrec train`")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="raw user id; the history comes from the data set in the folder's data.json")
    who.add_argument("--history", metavar="ITEM,ITEM,...", help="an ad-hoc history of raw item ids, oldest first")
    p.add_argument("--dataset", default=None, choices=sorted(pipeline.LOADERS),
                   help="read the user's history from this data set instead of the one in data.json")
    p.add_argument("--path", default=None, help="its folder or file")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--no-explain", action="store_true", help="skip the explanation of the first item")
    p.set_defaults(func=cmd_recommend)
