"""Line-accurate reading of delimited text files, shared by every loader.

Reading is vectorised (one `pd.read_csv` call on the C engine) whenever the file
lets us map rows back to file lines exactly; otherwise (blank lines, quoted fields,
wrong field counts) a pure-Python pass splits the lines and keeps their numbers.
Values are always checked column-wise, and each bad value is reported with its
file, 1-based line number and field, or skipped and recorded (`on_bad_lines`).
"""
from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .schema import DataError

logger = logging.getLogger("migrec.data")

OnBadLines = Literal["raise", "skip"]
_UNIT_SEP = "\x1f"  # stands in for a multi-character separator such as "::"
_INT = r"[+-]?\d+"


@dataclass(frozen=True)
class Field:
    """One column of a text file.

    kind: "id" (integer id, kept as str), "token" (non-empty str), "str" (any text),
    "int" (integer -> float), "float" (number -> float, empty -> NaN),
    "time" (epoch seconds or ISO 8601 date -> epoch seconds), "ids" (list of
    integer ids joined by `sep`; empty allowed only when `required` is False).
    """

    name: str
    kind: str = "str"
    sep: str = ","
    required: bool = True


class BadLines:
    """Collects bad lines: raises on the first one, or records each and skips it."""

    def __init__(self, on_bad_lines: OnBadLines = "raise"):
        if on_bad_lines not in ("raise", "skip"):
            raise ValueError(f"on_bad_lines must be 'raise' or 'skip', not {on_bad_lines!r}")
        self.mode = on_bad_lines
        self.records: list[dict] = []

    def add(self, file: str, line: int | None, field: str | None, reason: str, unit: str = "line") -> None:
        """One bad line (or Parquet row): raise now, or remember it."""
        if self.mode == "raise":
            if unit == "row":  # Parquet has rows, not lines: say so in the message
                raise DataError(f"{reason} (row {line})", file=file, field=field)
            raise DataError(reason, file=file, line=line, field=field)
        self.records.append({"file": file, unit: int(line) if line is not None else None,
                             "field": field, "reason": reason})

    def add_rows(self, file: str, where: np.ndarray, bad: np.ndarray, field: str, reasons,
                 unit: str = "line") -> np.ndarray:
        """Report every row flagged in `bad`; return the mask of rows to keep.

        `reasons` is a list aligned with the flagged rows (or one string for all).
        """
        idx = np.flatnonzero(bad)
        if not len(idx):
            return np.ones(len(bad), dtype=bool)
        texts = [reasons] * len(idx) if isinstance(reasons, str) else list(reasons)
        for i, reason in zip(idx, texts):
            self.add(file, int(where[i]), field, reason, unit)
        return ~np.asarray(bad, dtype=bool)

    def publish(self, meta: dict, name: str) -> None:
        """Store the skipped lines in `meta` and warn with their count (never silent)."""
        order: dict[str, int] = {}
        for r in self.records:
            order.setdefault(r["file"], len(order))
        # grouped by file (in reading order), then by position in the file
        meta["skipped_lines"] = sorted(self.records, key=lambda r: (order[r["file"]], r.get("line") or 0,
                                                                      r.get("row") or 0))
        if self.records:
            files = sorted({r["file"] for r in self.records})
            logger.warning("%s: skipped %d bad line(s) in %s; see dataset.meta['skipped_lines']",
                           name, len(self.records), ", ".join(files))


# -- reading and decoding ---------------------------------------------------------
def data_folder(path) -> Path:
    """The folder of a data set: `path` itself, or the folder of a file inside it."""
    folder = Path(path)
    if not folder.exists():
        raise DataError("folder not found", file=str(folder))
    return folder.parent if folder.is_file() else folder


def read_bytes(path) -> bytes:
    """Whole file as bytes; local paths or fsspec URLs (compression from the suffix)."""
    import fsspec

    try:
        with fsspec.open(str(path), "rb", compression="infer") as fh:
            return fh.read()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None


def decode(raw: bytes, file: str, encoding: str, sep: str | None = None,
           names: list[str] | None = None) -> str:
    """Decode, turning a UnicodeDecodeError into a DataError with line and field."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        start = raw.rfind(b"\n", 0, err.start) + 1
        line = raw.count(b"\n", 0, err.start) + 1
        field = None
        if sep and names:  # which field the bad byte sits in
            k = raw[start:err.start].count(sep.encode("ascii"))
            field = names[k] if k < len(names) else None
        raise DataError(
            f"cannot decode byte 0x{raw[err.start]:02x} (column {err.start - start + 1}) with encoding "
            f"{encoding!r}; the file is probably in another encoding (e.g. latin-1 or cp1252)",
            file=file, line=line, field=field) from None
    return text[1:] if text.startswith("\ufeff") else text  # drop a UTF-8 byte-order mark


def read_text(path, encoding: str = "utf-8", sep: str | None = None, names: list[str] | None = None) -> str:
    return decode(read_bytes(path), str(path), encoding, sep, names)


def split_header(text: str) -> tuple[str, str]:
    """(first line without its line end, the rest of the text)."""
    cut = text.find("\n")
    if cut < 0:
        return text.rstrip("\r"), ""
    return text[:cut].rstrip("\r"), text[cut + 1:]


# -- tokenising -------------------------------------------------------------------
def _fast_tokens(body: str, names: list[str], sep: str, first_line: int):
    """read_csv on the C engine, or None when rows cannot be mapped to lines exactly."""
    if len(sep) > 1:
        if _UNIT_SEP in body:
            return None
        body, sep = body.replace(sep, _UNIT_SEP), _UNIT_SEP
    stripped = body.rstrip("\r\n")
    if not stripped:
        return pd.DataFrame({n: pd.Series([], dtype=str) for n in names}), np.array([], dtype=np.int64)
    # Blank lines would shift row numbers (quoted files never get here: see tokenise).
    if "\n\n" in stripped or "\n\r\n" in stripped or stripped[0] in "\r\n":
        return None
    n_lines = stripped.count("\n") + 1
    # Every row holds exactly len(names)-1 separators iff the totals agree and no row
    # has too many (read_csv raises on those), so short rows cannot slip through.
    if stripped.count(sep) != n_lines * (len(names) - 1):
        return None
    try:
        frame = pd.read_csv(io.StringIO(stripped), sep=sep, header=None, names=names, dtype=str,
                            na_filter=False, quoting=csv.QUOTE_NONE, engine="c", skip_blank_lines=False)
    except (pd.errors.ParserError, ValueError):
        return None
    if len(frame) != n_lines:
        return None
    return frame, np.arange(first_line, first_line + n_lines, dtype=np.int64)


def _split_lines(body: str, sep: str, quoting: bool, first_line: int):
    """Yield (line number, fields) for each non-blank record, in file order."""
    if quoting:
        reader = csv.reader(io.StringIO(body), delimiter=sep, strict=True)
        prev = 0
        while True:
            start = first_line + prev
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield start, err
                return  # the csv reader cannot resynchronise after a broken quote
            prev = reader.line_num
            if row and any(f.strip() for f in row):
                yield start, row
    else:
        for i, line in enumerate(body.split("\n")):
            line = line[:-1] if line.endswith("\r") else line
            if line.strip():
                yield first_line + i, line.split(sep)


def _slow_tokens(body: str, names: list[str], sep: str, first_line: int, quoting: bool,
                 file: str, bad: BadLines):
    rows, lines = [], []
    k = len(names)
    for line, parts in _split_lines(body, sep, quoting, first_line):
        if isinstance(parts, csv.Error):
            bad.add(file, line, None, f"malformed quoting: {parts}; the rest of the file cannot be read")
            break
        if len(parts) != k:
            field = names[len(parts)] if len(parts) < k else names[-1]
            what = "missing" if len(parts) < k else "unexpected extra data after"
            bad.add(file, line, field,
                    f"expected {k} fields ({', '.join(names)}) separated by {sep!r}, found {len(parts)}: "
                    f"{what} field {field!r}")
            continue
        rows.append(parts)
        lines.append(line)
    frame = pd.DataFrame(rows, columns=names, dtype=object) if rows else pd.DataFrame(columns=names, dtype=object)
    return frame.astype(str), np.asarray(lines, dtype=np.int64)


def tokenise(body: str, names: list[str], sep: str, first_line: int, file: str, bad: BadLines,
             quoting: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Split `body` (the file after any header) into string columns and line numbers."""
    # Quotes may hide separators or newlines: only the csv module reads those right.
    fast = None if quoting and '"' in body else _fast_tokens(body, names, sep, first_line)
    if fast is not None:
        return fast
    return _slow_tokens(body, names, sep, first_line, quoting, file, bad)


# -- value checks -----------------------------------------------------------------
def _as_text(col: pd.Series) -> pd.Series:
    """Strings with surrounding spaces removed; nulls (Parquet) become ''."""
    if pd.api.types.is_float_dtype(col):  # ints that went through NaN come back as x.0
        whole = col.notna() & (col == np.floor(col))
        out = col.astype(object).where(col.notna(), "")
        out[whole] = col[whole].astype(np.int64).astype(str)
        return out.astype(str)
    if pd.api.types.is_string_dtype(col) and not col.hasnans:  # the common, fast case
        return col.str.strip()
    return col.astype(object).where(col.notna(), "").astype(str).str.strip()


def _check_id(col):
    text = _as_text(col)
    ok = text.str.fullmatch(_INT).to_numpy(dtype=bool)
    if ok.all() and text.str.match(r"[+0]\d").any():  # "007" and "7" must be one id
        text = text.astype(np.int64).astype(str)
    return text, ~ok, lambda v: f"must be an integer id, got {v!r}"


def _check_token(col):
    text = _as_text(col)
    return text, (text == "").to_numpy(), lambda v: "empty value"


def _check_int(col):
    if pd.api.types.is_integer_dtype(col):
        return col.astype(np.float64), np.zeros(len(col), dtype=bool), None
    text = _as_text(col)
    ok = text.str.fullmatch(_INT).to_numpy(dtype=bool)
    values = (text if ok.all() else text.where(ok, "0")).astype(np.int64).astype(np.float64)
    return values, ~ok, lambda v: f"must be an integer, got {v!r}"


def _check_float(col):
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(np.float64), np.zeros(len(col), dtype=bool), None
    text = _as_text(col)
    values = pd.to_numeric(text, errors="coerce").astype(np.float64)
    return values, (values.isna() & (text != "")).to_numpy(), lambda v: f"must be a number, got {v!r}"


def to_epoch_seconds(col: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Numbers pass through; datetimes and ISO 8601 strings become epoch seconds (UTC
    when no zone is given). Returns the values and the mask of unreadable entries."""
    epoch = pd.Timestamp(0, tz="UTC")
    if pd.api.types.is_datetime64_any_dtype(col):
        dt = col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")
        values = ((dt - epoch) / pd.Timedelta(seconds=1)).astype(np.float64)
        return values, values.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(col):
        values = col.astype(np.float64)
        return values, values.isna().to_numpy()
    text = _as_text(col)
    values = pd.to_numeric(text, errors="coerce").astype(np.float64)
    dates = values.isna() & (text != "")
    if dates.any():
        dt = pd.to_datetime(text[dates], format="ISO8601", utc=True, errors="coerce")
        values[dates] = ((dt - epoch) / pd.Timedelta(seconds=1)).astype(np.float64)
    return values, values.isna().to_numpy()


def _check_time(col):
    values, bad = to_epoch_seconds(col)
    return values, bad, lambda v: f"must be epoch seconds or an ISO 8601 date, got {v!r}"


def _check_ids(col, sep, required):
    text = _as_text(col)
    one = r"\d+"
    pattern = f"{one}(?:{re.escape(sep)}{one})*"
    ok = text.str.fullmatch(pattern if required else f"(?:{pattern})?").to_numpy(dtype=bool)
    return text, ~ok, lambda v: f"must be a list of integer ids separated by {sep!r}, got {v[:60]!r}"


_CHECKS = {"id": _check_id, "token": _check_token, "int": _check_int, "float": _check_float,
           "time": _check_time}


def check_values(frame: pd.DataFrame, where: np.ndarray, fields: list[Field], file: str, bad: BadLines,
                 unit: str = "line", labels: dict | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Convert each column by its kind; bad values raise or are skipped (one report per line).

    `where` holds the line (or row) number of each frame row; `labels` names the
    columns in messages when they differ from the field names.
    """
    labels = labels or {}
    out, flags = {}, []
    for f in fields:
        label = labels.get(f.name, f.name)
        col = frame[f.name]
        if f.kind == "ids":
            values, is_bad, why = _check_ids(col, f.sep, f.required)
        elif f.kind == "str":
            values, is_bad, why = col.astype(object).where(col.notna(), "").astype(str), None, None
        else:
            values, is_bad, why = _CHECKS[f.kind](col)
        out[f.name] = values.reset_index(drop=True)
        if is_bad is not None and is_bad.any():
            flags.append((np.asarray(is_bad, dtype=bool), label, why, col))
    result = pd.DataFrame(out)
    if not flags:
        return result, where
    # One report per line: the first bad field on the earliest line comes first.
    first_field = np.full(len(frame), -1)
    for k in range(len(flags) - 1, -1, -1):
        first_field[flags[k][0]] = k
    rows = np.flatnonzero(first_field >= 0)
    for r in rows[np.argsort(where[rows], kind="stable")]:
        _, label, why, col = flags[first_field[r]]
        bad.add(file, int(where[r]), label, why(str(col.iloc[r])), unit)
    keep = first_field < 0
    return result[keep].reset_index(drop=True), where[keep]


def read_records(path, fields: list[Field], *, sep: str, encoding: str, bad: BadLines,
                 header: bool = False, quoting: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a header-less (or fixed-header) delimited file into checked columns + line numbers."""
    names = [f.name for f in fields]
    text = read_text(path, encoding, sep, names)
    first_line = 1
    if header:
        _, text = split_header(text)
        first_line = 2
    frame, lines = tokenise(text, names, sep, first_line, str(path), bad, quoting)
    return check_values(frame, lines, fields, str(path), bad)


def is_member(values, known: pd.Index) -> np.ndarray:
    """Vectorised membership test (hash lookup; Series.isin on Arrow strings is slow)."""
    known = known if known.is_unique else known.unique()
    return known.get_indexer(np.asarray(values, dtype=object)) >= 0


def keep_known(values: pd.Series, where: np.ndarray, known: pd.Index, file: str, field: str,
               bad: BadLines, what: str, unit: str = "line") -> np.ndarray:
    """Mask of rows whose value is in `known`; the others are reported as bad lines."""
    unknown = ~is_member(values, known)
    shown = values.to_numpy()[unknown]
    return bad.add_rows(file, where, unknown, field, [f"{field} {v!r} is not in {what}" for v in shown], unit)


def keep_first(values: pd.Series, where: np.ndarray, file: str, field: str, bad: BadLines,
               unit: str = "line") -> np.ndarray:
    """Mask dropping repeats of a value that must be unique (e.g. an item id in a catalogue)."""
    dup = values.duplicated().to_numpy()
    if not dup.any():
        return np.ones(len(values), dtype=bool)
    first_seen = dict(zip(values[~dup].to_numpy(), where[~dup]))
    shown = values.to_numpy()[dup]
    return bad.add_rows(file, where, dup, field,
                        [f"{field} {v!r} appears again (first on {unit} {first_seen[v]})" for v in shown], unit)


def explode_lists(owners: pd.Series, lists: pd.Series, where: np.ndarray, sep: str):
    """One row per list element: (owner, element, line of the list, 0-based position)."""
    text = lists.astype(str).to_numpy()
    lengths = np.array([0 if not t else t.count(sep) + 1 for t in text], dtype=np.int64)
    flat = np.array(sep.join(t for t in text if t).split(sep), dtype=object) if lengths.sum() else \
        np.array([], dtype=object)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(len(flat), dtype=np.int64) - starts
    return (np.repeat(owners.to_numpy(dtype=object), lengths), flat, np.repeat(where, lengths), positions)


def keep_known_in_lists(items: np.ndarray, item_lines: np.ndarray, positions: np.ndarray, known: pd.Index,
                        file: str, field: str, bad: BadLines, what: str) -> np.ndarray:
    """Mask over list elements: a list holding any unknown id is a bad line, dropped whole."""
    unknown = ~is_member(items, known)
    if not unknown.any():
        return np.ones(len(items), dtype=bool)
    bad_lines, first = np.unique(item_lines[unknown], return_index=True)
    shown, pos = items[unknown][first], positions[unknown][first]
    for line, value, p in zip(bad_lines, shown, pos):
        bad.add(file, int(line), field, f"item {value!r} (position {int(p) + 1} in the list) is not in {what}")
    return ~np.isin(item_lines, bad_lines)
