"""`migrec interests`: one user's interest profile, detected migrations and timeline plot; with
`--model-dir` holding a multi-interest model, also the user's interests as that model sees them."""
from __future__ import annotations

from pathlib import Path

from ..drift.report import SPACES, Migration, load_space, user_report


def show_interests(model, history, catalogue, k_items: int = 3, weights: str = "current") -> list[dict]:
    """Print a raw-id history's interests (a MultiInterestModel's describe_interests); returns them."""
    from ..models.multi_interest import format_interests

    described = model.describe_interests(history, catalogue, k_items=k_items, weights=weights)
    print(f"  {format_interests(described, k_items=k_items)}")
    for d in described:
        topics = ", ".join(f"{name} {share:.0%}" for name, share in d["topics"])
        print(f"    {d['name']:<24.24} {d['weight']:4.0%}  topics: {topics or '-'}")
        print(f"      explains: {'; '.join(d['items']) or '-'}")
        print(f"      suggests: {'; '.join(d['suggestions']) or '-'}")
    return described


def _model_interests(args, ds, history) -> None:
    import pandas as pd

    from ..models.multi_interest import MultiInterestModel
    from .core import CATALOGUE_FILE
    from .recommend import load_model_dir

    model = load_model_dir(args.model_dir)
    if not isinstance(model, MultiInterestModel):
        raise SystemExit(f"--model-dir {args.model_dir} holds a {type(model).__name__} ({model.name}), not a "
                         f"multi-interest model: train one with `migrec train --model multi-interest`")
    file = Path(args.model_dir) / CATALOGUE_FILE
    catalogue = pd.read_parquet(file) if file.exists() else ds.catalogue
    raw = ds.catalogue["item_id"].astype(str).to_numpy()[history.items]
    known = int(model.knows(raw).sum())
    print(f"User {history.user}: interests of the {model.name} model in {args.model_dir} "
          f"({known} of {len(raw)} events known to it, the newest {model.recent} read, "
          f"weights = {args.weights} shares):")
    show_interests(model, list(raw), catalogue, weights=args.weights)


def run(args) -> list[Migration]:
    try:
        ds, hist, topics, vectors = load_space(args.dataset, args.data, args.space, args.encoder, args.cache)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    user = str(args.user)
    if user not in hist:
        raise SystemExit(f"user {user!r} has no timed events in {args.dataset} "
                         f"(known ids look like {', '.join(list(hist)[:3])})")
    if args.model_dir is not None:
        _model_interests(args, ds, hist[user])
    try:
        return user_report(hist[user], topics, vectors, short=args.short, long=args.long,
                           false_alarm=args.false_alarm, plot=args.plot, every=args.every,
                           title=f"{args.dataset} user {user}: interests over time")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def add_parser(sub) -> None:
    p = sub.add_parser("interests", help="a user's interest profile, detected migrations and timeline")
    p.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    p.add_argument("--data", default=None, help="data folder (default ../shared/data/<dataset>)")
    p.add_argument("--user", required=True, help="raw user id")
    p.add_argument("--model-dir", default=None,
                   help="a folder from `migrec train --model multi-interest`: also print the user's interests "
                        "(weights, the items each explains, topics, suggestions)")
    p.add_argument("--weights", default="current", choices=["current", "forecast"],
                   help="with --model-dir: interest weights = current shares or next period's forecast")
    p.add_argument("--space", default="cf", choices=SPACES,
                   help="detector vectors: cf (collaborative SVD item vectors, default), text (item text "
                        "encoder) or topics")
    p.add_argument("--short", type=int, default=10, help="recent window (events)")
    p.add_argument("--long", type=int, default=50, help="reference window (events)")
    p.add_argument("--false-alarm", type=float, default=0.05)
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the interest timeline")
    p.add_argument("--every", type=int, default=10, help="events per period in the plot")
    p.add_argument("--encoder", default="st")
    p.add_argument("--cache", default=None)
    p.set_defaults(func=run)
