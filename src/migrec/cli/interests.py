"""`migrec interests`: one user's interest profile, detected migrations and timeline plot."""
from __future__ import annotations

from ..drift.report import SPACES, Migration, load_space, user_report


def run(args) -> list[Migration]:
    try:
        _, hist, topics, vectors = load_space(args.dataset, args.data, args.space, args.encoder, args.cache)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    user = str(args.user)
    if user not in hist:
        raise SystemExit(f"user {user!r} has no timed events in {args.dataset} "
                         f"(known ids look like {', '.join(list(hist)[:3])})")
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
