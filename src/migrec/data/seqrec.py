"""The seqrec-benchmark folders (converted from Tiny-Snow/SeqRecBenchmark-Datasets; see the README
in ../shared/data/seqrec-benchmark/): one folder per domain or platform, e.g. `amazon2014-beauty`,
`steam_100000`, `food` (Food.com), `movielens-1m` (all 6,040 users, with timestamps).

Each folder holds `interactions.tsv` (header `user_id, item_id, timestamp`: unix seconds, day
resolution for Amazon; grouped by user, in time order) and `items.tsv` (header `item_id, title`;
no quoting; HTML entities such as `&amp;` as upstream, decoded here). Tab-separated.

Every folder numbers its users and items from 100, so ids are prefixed with the domain
("amazon2014-toy:9225", also when one folder is read alone: an item keeps one id in every
combination). The domain is the folder name, except `food` -> "food.com" (the Amazon Food
domain of amazon-food-kitchen is "food"). Users of different folders are different people.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ._records import BadLines, Field, OnBadLines, check_values, keep_first, keep_known, read_text, split_header, \
    tokenise
from .schema import DataError, Dataset, make_catalogue, make_interactions

DOMAINS = {"food": "food.com"}                  # folder -> domain, where the folder name is ambiguous
EVENTS = {"movielens-1m": "rating"}             # folder -> event kind; reviews elsewhere
_ITEMS = [Field("item_id", "id"), Field("title", "token")]
_EVENTS = [Field("user_id", "id"), Field("item_id", "id"), Field("timestamp", "time")]


def seqrec_folders(root) -> list[str]:
    """The data sets under a seqrec-benchmark root: sub-folders holding an interactions.tsv."""
    return sorted(p.parent.name for p in Path(root).glob("*/interactions.tsv"))


def _table(path: Path, fields: list[Field], bad: BadLines):
    """A headed TSV file: the header must name `fields`; rows checked, with their line numbers."""
    names = [f.name for f in fields]
    if not path.exists():
        raise DataError("file not found", file=str(path))
    header, body = split_header(read_text(path, "utf-8", "\t", names))
    if header.split("\t") != names:
        raise DataError(f"expected the header {chr(9).join(names)!r}, got {header[:80]!r}", file=str(path), line=1)
    frame, lines = tokenise(body, names, "\t", 2, str(path), bad)
    return check_values(frame, lines, fields, str(path), bad)


def _folder(folder: Path, bad: BadLines):
    """(interactions, catalogue) of one folder, ids prefixed with its domain."""
    domain = DOMAINS.get(folder.name, folder.name)
    items_file, events_file = folder / "items.tsv", folder / "interactions.tsv"
    items, lines = _table(items_file, _ITEMS, bad)
    items = items[keep_first(items["item_id"], lines, str(items_file), "item_id", bad)]
    events, lines = _table(events_file, _EVENTS, bad)
    events = events[keep_known(events["item_id"], lines, pd.Index(items["item_id"]), str(events_file), "item_id",
                               bad, str(items_file))]
    titles = items["title"].map(lambda t: html.unescape(t) if "&" in t else t)
    catalogue = make_catalogue(domain + ":" + items["item_id"], titles, domain=domain)
    log = make_interactions(domain + ":" + events["user_id"], domain + ":" + events["item_id"], domain=domain,
                            event=EVENTS.get(folder.name, "review"), timestamp=events["timestamp"])
    return log, catalogue


def load_seqrec(path: str | Path, name: str | list[str] | None = None, on_bad_lines: OnBadLines = "raise") -> Dataset:
    """One or several seqrec-benchmark folders as one Dataset.

    path: a data set's folder (`.../seqrec-benchmark/steam_100000`), or the root with `name`
    one folder, a list, a comma-separated string or "all"; `.../seqrec-benchmark/a,b` also
    names two folders (so `migrec train --dataset seqrec --path` reaches a combination).
    Events keep each user's file order among equal timestamps; no rating values (NaN).
    """
    path = Path(path)
    if name is None and (path / "interactions.tsv").exists():
        root, names = path.parent, [path.name]
    elif name is None and not path.exists() and "," in path.name:
        root, names = path.parent, path.name.split(",")
    else:
        root = path
        if not root.is_dir():
            raise DataError("folder not found", file=str(root))
        available = seqrec_folders(root)
        if name is None:
            raise DataError(f"no interactions.tsv here: name the data set(s), one or more of {available}",
                            file=str(root))
        names = available if name == "all" else name.split(",") if isinstance(name, str) else list(name)
    names = [n.strip() for n in names]
    if len(set(names)) < len(names) or not names:
        raise ValueError(f"name each data set once: {names}")
    bad = BadLines(on_bad_lines)
    parts = [_folder(root / n, bad) for n in names]
    log = pd.concat([p[0] for p in parts], ignore_index=True)
    catalogue = pd.concat([p[1] for p in parts], ignore_index=True)
    label = "seqrec:" + "+".join(names)
    meta = {"source": str(root), "folders": names,
            "domains": {n: DOMAINS.get(n, n) for n in names}}
    bad.publish(meta, label)
    return Dataset(log, catalogue, label, meta)
