"""The `migrec` command: prepare, encode, train, evaluate, recommend, transfer, interests, demo.

    common.py      shared arguments, `--param` values, the command line as typed, printing recommendations
    core.py        prepare, encode, train (model folder: model + catalogue + data.json), evaluate
    recommend.py   recommend: a user's history from the data set, or a history typed in
    transfer.py    transfer: the transfer regimes between domains
    interests.py   interests: one user's interest profile and migrations (migrec.drift.report)
    demo.py        demo: the whole pipeline on MovieLens-100K
    serve.py       serve, import, update, keys: the REST service and its store (migrec.serving)

Only this package imports these modules; the library never imports the command line.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import core, demo, interests, recommend, serve, transfer
from .common import command_line, parse_value, show_recommendations

__all__ = ["main", "build_parser", "command_line", "parse_value", "show_recommendations"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="migrec", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log training details")
    sub = parser.add_subparsers(dest="command", required=True)
    core.add_parsers(sub)
    recommend.add_parser(sub)
    transfer.add_parser(sub)
    interests.add_parser(sub)
    demo.add_parser(sub)
    serve.add_parsers(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # `train --nproc` re-runs it under torchrun
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
