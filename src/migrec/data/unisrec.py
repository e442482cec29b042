"""UniSRec / RecBole atomic files (Amazon 2018 "downstream" sets such as Scientific).

`{name}.test.inter` holds, per user, the history (<= 50 items, oldest first) and the
last item; history + target is the user's whole visible sequence. Indices map back
to ASINs (`{name}.item2index`) and reviewer ids (`{name}.user2index`); item text
(title. categories. brand.) comes from `{name}.text`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._records import (BadLines, Field, OnBadLines, check_values, data_folder, explode_lists, keep_first,
                       keep_known, keep_known_in_lists, read_records, read_text, split_header, tokenise)
from .schema import DataError, Dataset, make_catalogue, make_interactions

_INTER_HEADER = ["user_id:token", "item_id_list:token_seq", "item_id:token"]
_TEXT_HEADER = ["item_id:token", "text:token_seq"]


def _with_header(path: Path, expected: list[str], fields: list[Field], bad: BadLines):
    """Read a RecBole file whose first line must name the expected typed columns."""
    header, body = split_header(read_text(path, "utf-8", "\t", [f.name for f in fields]))
    got = header.split("\t")
    for i, col in enumerate(expected):
        if i >= len(got) or got[i].strip() != col:
            raise DataError(f"expected the header {chr(9).join(expected)!r}, got {header[:80]!r}",
                            file=str(path), line=1, field=col)
    frame, lines = tokenise(body, [f.name for f in fields], "\t", 2, str(path), bad)
    return check_values(frame, lines, fields, str(path), bad)


def _index_map(path: Path, key: str, bad: BadLines) -> pd.Series:
    """`{name}.item2index` / `.user2index` (`raw id<TAB>index`) as index -> raw id."""
    frame, lines = read_records(path, [Field(key, "token"), Field("index", "id")], sep="\t",
                                encoding="utf-8", bad=bad)
    keep = keep_first(frame["index"], lines, str(path), "index", bad)
    frame = frame[keep]
    return pd.Series(frame[key].to_numpy(), index=frame["index"].to_numpy())


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        raise DataError("file not found", file=str(path))
    return path


def load_unisrec(path: str | Path, name: str = "Scientific", on_bad_lines: OnBadLines = "raise") -> Dataset:
    """A UniSRec downstream set (e.g. "Scientific") rebuilt from `{name}.test.inter`.

    User ids are reviewer ids, item ids ASINs; catalogue title = the item text;
    domain = `name` lower-cased; order only (timestamp NaN), event "review".
    """
    folder = data_folder(path)
    bad = BadLines(on_bad_lines)
    domain = name.lower()
    text_file = _need(folder, f"{name}.text")
    text, text_lines = _with_header(text_file, _TEXT_HEADER, [Field("asin", "token"), Field("text")], bad)
    text = text[keep_first(text["asin"], text_lines, str(text_file), "item_id", bad)]
    catalogue = make_catalogue(text["asin"], text["text"].str.strip(), domain=domain)
    items = _index_map(_need(folder, f"{name}.item2index"), "asin", bad)
    users = _index_map(_need(folder, f"{name}.user2index"), "reviewer_id", bad)

    inter_file = _need(folder, f"{name}.test.inter")
    fields = [Field("user", "id"), Field("history", "ids", sep=" ", required=False), Field("target", "id")]
    inter, lines = _with_header(inter_file, _INTER_HEADER, fields, bad)
    # one report per line: each check sees only the lines that passed the previous ones
    checks = [lambda f, w: keep_first(f["user"], w, str(inter_file), "user_id", bad),
              lambda f, w: keep_known(f["user"], w, users.index, str(inter_file), "user_id", bad,
                                      f"{name}.user2index"),
              lambda f, w: keep_known(f["target"], w, items.index, str(inter_file), "item_id", bad,
                                      f"{name}.item2index")]
    for check in checks:
        keep = check(inter, lines)
        inter, lines = inter[keep].reset_index(drop=True), lines[keep]
    sequence = (inter["history"] + " " + inter["target"]).str.strip()
    owners, idx, item_lines, positions = explode_lists(inter["user"], sequence, lines, " ")
    ok = keep_known_in_lists(idx, item_lines, positions, items.index, str(inter_file), "item_id_list", bad,
                             f"{name}.item2index")
    owners, idx, item_lines, positions = owners[ok], idx[ok], item_lines[ok], positions[ok]
    asins = items.reindex(idx).to_numpy(dtype=object) if len(idx) else np.array([], dtype=object)
    ok = keep_known_in_lists(asins, item_lines, positions, pd.Index(catalogue["item_id"]), str(inter_file),
                             "item_id_list", bad, f"{name}.text")
    log = make_interactions(users.reindex(owners[ok]).to_numpy(dtype=object), asins[ok], domain=domain,
                            event="review")
    meta = {"source": str(folder), "protocol": "leave-one-out (last = test, second-last = valid), full ranking; "
                                               "histories were truncated to 50 items by the source"}
    bad.publish(meta, name)
    return Dataset(log, catalogue, name, meta)
