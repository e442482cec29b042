"""Amazon Food -> Kitchen, cross-domain sequential format of the LLMCDSR release.

Files: `items_A_food.tsv`, `items_B_kitchen.tsv` (header local_index, global_index,
asin, title; tab-separated, csv-quoted), and sequence files `user<TAB>id,id,...`
(global ids, oldest first): train_A.txt, train_B.txt, train_overlap.txt, valid.txt,
test.txt. User numbers restart at 1 in each file, so user ids get a population prefix.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from ._records import (BadLines, Field, OnBadLines, check_values, data_folder, explode_lists, keep_first,
                       keep_known_in_lists, read_records, read_text, split_header, tokenise)
from .schema import DOMAIN, ITEM, DataError, Dataset, make_catalogue, make_interactions

ITEM_FILES = {"food": "items_A_food.tsv", "kitchen": "items_B_kitchen.tsv"}
# population prefix -> file; valid/test users are held out, their last item is the target
SEQUENCE_FILES = {"A": "train_A.txt", "B": "train_B.txt", "AB": "train_overlap.txt",
                  "valid": "valid.txt", "test": "test.txt"}
_ITEM_COLUMNS = {"global_index": "id", "asin": "token", "title": "str", "local_index": "id"}


def _items(path: Path, domain: str, bad: BadLines) -> pd.DataFrame:
    """One item file: header names the columns; global_index becomes the item id."""
    header, body = split_header(read_text(path, "utf-8"))
    names = next(csv.reader([header], delimiter="\t"), [])
    for col in _ITEM_COLUMNS:
        if col not in names:
            raise DataError(f"missing column {col!r}; the header has {names}", file=str(path), line=1, field=col)
    frame, lines = tokenise(body, names, "\t", 2, str(path), bad, quoting=True)
    fields = [Field(n, _ITEM_COLUMNS.get(n, "str")) for n in names]
    frame, lines = check_values(frame, lines, fields, str(path), bad)
    frame = frame[keep_first(frame["global_index"], lines, str(path), "global_index", bad)]
    return pd.DataFrame({ITEM: frame["global_index"].to_numpy(), DOMAIN: domain,
                         "title": frame["title"].to_numpy(), "asin": frame["asin"].to_numpy()})


def _sequences(path: Path, prefix: str, catalogue: pd.DataFrame, bad: BadLines) -> pd.DataFrame:
    """Interactions of one sequence file, users prefixed, file order kept."""
    fields = [Field("user", "id"), Field("items", "ids", sep=",")]
    frame, lines = read_records(path, fields, sep="\t", encoding="utf-8", bad=bad)
    keep = keep_first(frame["user"], lines, str(path), "user", bad)
    frame, lines = frame[keep], lines[keep]
    users, items, item_lines, positions = explode_lists(prefix + ":" + frame["user"], frame["items"], lines, ",")
    known = pd.Index(catalogue[ITEM])
    ok = keep_known_in_lists(items, item_lines, positions, known, str(path), "items", bad,
                             "the catalogue (" + ", ".join(ITEM_FILES.values()) + ")")
    users, items = users[ok], items[ok]
    domains = catalogue[DOMAIN].to_numpy()[known.get_indexer(items)] if len(items) else np.array([], dtype=object)
    return make_interactions(users, items, domain=domains, event="review")


def load_amazon_food_kitchen(path: str | Path, on_bad_lines: OnBadLines = "raise") -> Dataset:
    """Amazon Food (A) -> Kitchen (B) from the LLMCDSR files; order only (timestamp NaN).

    Item ids are the global indices as str (unique across both domains); the catalogue
    keeps each item's `asin`. Users are "A:n", "B:n", "AB:n" (training populations)
    and "valid:n", "test:n" (held-out overlapped users). Every sequence is logged
    whole; `meta["heldout_users"]` lists the valid/test users, whose LAST event is
    the target under the repository's protocol (ranked against 999 items sampled
    from the target's domain).
    """
    folder = data_folder(path)
    bad = BadLines(on_bad_lines)
    parts = []
    for domain, name in ITEM_FILES.items():
        file = folder / name
        if not file.exists():
            raise DataError("item file not found", file=str(file))
        parts.append(_items(file, domain, bad))
    catalogue = make_catalogue(pd.concat([p[ITEM] for p in parts]), pd.concat([p["title"] for p in parts]),
                               domain=pd.concat([p[DOMAIN] for p in parts]),
                               asin=pd.concat([p["asin"] for p in parts]))
    dup = catalogue[ITEM].duplicated()
    if dup.any():  # the two files must use disjoint global indices
        raise DataError(f"global_index {catalogue[ITEM][dup].iloc[0]!r} is used in both item files",
                        file=str(folder / ITEM_FILES["kitchen"]), field="global_index")
    logs, populations = [], {}
    for prefix, name in SEQUENCE_FILES.items():
        file = folder / name
        if not file.exists():
            raise DataError("sequence file not found", file=str(file))
        log = _sequences(file, prefix, catalogue, bad)
        logs.append(log)
        populations[prefix] = {"file": name, "users": int(log["user_id"].nunique()), "events": len(log)}
    log = pd.concat(logs, ignore_index=True)
    meta = {
        "source": str(folder),
        "domains": {"A": "food", "B": "kitchen"},
        "populations": populations,
        "heldout_users": {p: logs[i]["user_id"].unique().tolist()
                          for i, p in enumerate(SEQUENCE_FILES) if p in ("valid", "test")},
        "protocol": "valid/test users: last event = target, the rest = history; rank the target against "
                    "999 items sampled uniformly from the target's domain; report per domain",
    }
    bad.publish(meta, "amazon-food-kitchen")
    return Dataset(log, catalogue, "amazon-food-kitchen", meta)
