"""Generic loader: any CSV/TSV or Parquet table (local path or fsspec URL) plus a column mapping."""
from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from ._records import (BadLines, Field, OnBadLines, check_values, decode, keep_first, keep_known, split_header,
                       tokenise)
from .schema import (DEFAULT_DOMAIN, DOMAIN, EVENT, ITEM, RATING, TIME, TITLE, USER, DataError, Dataset,
                     make_catalogue, make_interactions)

# schema role -> kind of value checked in the log table
LOG_ROLES = {USER: "token", ITEM: "token", TIME: "time", RATING: "float", EVENT: "token", DOMAIN: "token"}
_PARQUET = (".parquet", ".pq", ".parq")


def _suffixes(path) -> list[str]:
    name = PurePosixPath(str(path).split("?")[0]).name.lower()
    for comp in (".gz", ".bz2", ".xz", ".zst", ".zip"):  # compression is handled by fsspec
        name = name.removesuffix(comp)
    return PurePosixPath(name).suffixes


def _is_parquet(path) -> bool:
    return bool(_suffixes(path)) and _suffixes(path)[-1] in _PARQUET


def _default_sep(path) -> str:
    suffixes = _suffixes(path)
    return "\t" if suffixes and suffixes[-1] in (".tsv", ".tab") else ","


def _open(path, storage_options: dict | None):
    """An fsspec file opened for reading (local path or URL; compression from the suffix)."""
    import fsspec

    return fsspec.open(str(path), "rb", compression="infer", **(storage_options or {}))


def _read_text(path, encoding: str, storage_options: dict | None) -> str:
    """The whole text file; a missing file or bucket is a DataError naming the path."""
    try:
        with _open(path, storage_options) as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    return decode(raw, str(path), encoding)


def _missing(file: str, columns: list[str], wanted: Mapping[str, str], unit_line: int | None):
    for role, source in wanted.items():
        if source not in columns:
            raise DataError(f"missing column {source!r} (mapped to {role!r}); the table has {columns}",
                            file=file, line=unit_line, field=source)


@dataclass
class Table:
    """Checked columns (one per schema role) and where each row came from."""

    frame: pd.DataFrame
    where: np.ndarray  # 1-based line (text) or row (Parquet, DataFrame) of each row
    unit: str          # "line" or "row"
    file: str


def _raw_table(path, wanted: Mapping[str, str], sep: str | None, encoding: str, bad: BadLines,
               storage_options: dict | None = None):
    """All columns as read (text: strings), with the 1-based line or row of each row."""
    if isinstance(path, pd.DataFrame):
        raw, file, unit = path, "<DataFrame>", "row"
    elif _is_parquet(path):
        file, unit = str(path), "row"
        try:
            with _open(file, storage_options) as fh:
                raw = pd.read_parquet(fh)
        except FileNotFoundError:
            raise DataError("file not found", file=file) from None
    else:
        file, sep = str(path), sep or _default_sep(path)
        header, body = split_header(_read_text(path, encoding, storage_options))
        columns = next(csv.reader([header], delimiter=sep), []) if header else []
        _missing(file, columns, wanted, 1)
        if len(set(columns)) != len(columns):
            raise DataError(f"the header repeats a column name: {columns}", file=file, line=1)
        raw, where = tokenise(body, columns, sep, 2, file, bad, quoting=True)
        return raw, where, "line", file
    _missing(file, [str(c) for c in raw.columns], wanted, None)
    return raw.rename(columns=str), np.arange(1, len(raw) + 1, dtype=np.int64), unit, file


def read_table(path, wanted: Mapping[str, str], kinds: Mapping[str, str], *, sep: str | None, encoding: str,
               bad: BadLines, storage_options: dict | None = None) -> Table:
    """Read the columns in `wanted` (role -> source column), checked by `kinds` (role -> kind)."""
    raw, where, unit, file = _raw_table(path, wanted, sep, encoding, bad, storage_options)
    frame = pd.DataFrame({role: raw[source].reset_index(drop=True) for role, source in wanted.items()})
    fields = [Field(role, kinds.get(role, "str")) for role in wanted]
    frame, where = check_values(frame, where, fields, file, bad, unit=unit, labels=dict(wanted))
    return Table(frame, where, unit, file)


def _catalogue(source, mapping: Mapping[str, str] | None, sep, encoding, domain: str, bad: BadLines,
               storage_options: dict | None = None):
    if mapping is None:  # the schema's own names, every other column kept as text
        columns = _columns_of(source, sep, encoding, storage_options)
        mapping = {c: c for c in columns}
        if ITEM not in mapping:
            raise DataError(f"missing column {ITEM!r}; pass catalogue_columns={{'item_id': ...}}",
                            file=str(source) if not isinstance(source, pd.DataFrame) else "<DataFrame>",
                            line=None if isinstance(source, pd.DataFrame) or _is_parquet(source) else 1,
                            field=ITEM)
    elif ITEM not in mapping:
        raise ValueError("catalogue_columns must map 'item_id' to a column of the catalogue")
    kinds = {ITEM: "token", DOMAIN: "token"}
    table = read_table(source, mapping, kinds, sep=sep, encoding=encoding, bad=bad, storage_options=storage_options)
    keep = keep_first(table.frame[ITEM], table.where, table.file, mapping[ITEM], bad, table.unit)
    frame = table.frame[keep].reset_index(drop=True)
    text = {c: frame[c] for c in frame.columns if c not in (ITEM, DOMAIN, TITLE)}
    titles = frame[TITLE] if TITLE in frame else frame[ITEM]
    doms = frame[DOMAIN] if DOMAIN in frame else domain
    return make_catalogue(frame[ITEM], titles, domain=doms, **text)


def _columns_of(source, sep, encoding, storage_options: dict | None = None) -> list[str]:
    if isinstance(source, pd.DataFrame):
        return [str(c) for c in source.columns]
    if _is_parquet(source):
        import pyarrow.parquet as pq

        try:
            with _open(source, storage_options) as fh:
                return list(pq.ParquetFile(fh).schema_arrow.names)
        except FileNotFoundError:
            raise DataError("file not found", file=str(source)) from None
    sep = sep or _default_sep(source)
    header, _ = split_header(_read_text(source, encoding, storage_options))
    return next(csv.reader([header], delimiter=sep), [])


def role_mapping(present, columns: Mapping[str, str] | None, roles, what: str = "table") -> dict:
    """role -> source column: `columns` checked against `roles` (user and item required), or by
    default the schema names among the `present` columns."""
    if columns is None:
        columns = {role: role for role in roles if role in present}
    unknown = set(columns) - set(roles)
    if unknown:
        raise ValueError(f"unknown schema columns {sorted(unknown)}; use some of {list(roles)}")
    for role in (USER, ITEM):
        if role not in columns:
            raise ValueError(f"columns must map {role!r} to a column of the {what}")
    return dict(columns)


def _log_mapping(path, columns: Mapping[str, str] | None, sep, encoding, storage_options: dict | None = None) -> dict:
    """The role -> column mapping, defaulting to the schema names found in the table."""
    present = _columns_of(path, sep, encoding, storage_options) if columns is None else ()
    return role_mapping(present, columns, LOG_ROLES)


def _minimal_catalogue(log: pd.DataFrame, domain: str) -> pd.DataFrame:
    """Every logged item once (first appearance order), titled by its id."""
    first = ~log[ITEM].duplicated()
    doms = log.loc[first, DOMAIN] if DOMAIN in log else domain
    return make_catalogue(log.loc[first, ITEM], log.loc[first, ITEM], domain=doms)


def _event_domains(log: pd.DataFrame, cat: pd.DataFrame, domain: str):
    """The log's own domain column, else each event in its item's catalogue domain."""
    if DOMAIN in log:
        return log[DOMAIN].to_numpy()
    if not len(log):
        return domain
    return cat[DOMAIN].to_numpy()[pd.Index(cat[ITEM]).get_indexer(log[ITEM])]


def load_table(path, columns: Mapping[str, str] | None = None, catalogue=None,
               catalogue_columns: Mapping[str, str] | None = None, *, sep: str | None = None,
               catalogue_sep: str | None = None, domain: str = DEFAULT_DOMAIN, event: str = "interaction",
               name: str | None = None, encoding: str = "utf-8", on_bad_lines: OnBadLines = "raise",
               storage_options: dict | None = None) -> Dataset:
    """Load an interaction table (CSV/TSV, or Parquet by suffix; fsspec URLs work).

    `columns` maps schema names to the table's columns, e.g. {"user_id": "uid",
    "item_id": "movie", "timestamp": "ts", "rating": "stars"}; user_id and item_id
    are required, timestamp (epoch seconds or ISO 8601 dates), rating, event and
    domain are optional. Default: the schema names themselves, where present.
    `catalogue` (a path or DataFrame) with `catalogue_columns` ({"item_id": ...,
    "title": ..., other text fields: ...}); without it a minimal catalogue is built
    (title = item id) so every logged item is known. Without a domain column, events
    take their item's catalogue domain (default `domain`). `sep` defaults to tab for
    .tsv/.tab files and comma otherwise. `storage_options` go to fsspec for the table and the
    catalogue (e.g. s3fs's {"endpoint_url": ..., "key": ..., "secret": ...}).
    """
    bad = BadLines(on_bad_lines)
    columns = _log_mapping(path, columns, sep, encoding, storage_options)
    table = read_table(path, columns, LOG_ROLES, sep=sep, encoding=encoding, bad=bad, storage_options=storage_options)
    log = table.frame
    if catalogue is None:
        cat = _minimal_catalogue(log, domain)
    else:
        cat = _catalogue(catalogue, catalogue_columns, catalogue_sep, encoding, domain, bad, storage_options)
        what = f"the catalogue ({catalogue if not isinstance(catalogue, pd.DataFrame) else 'DataFrame'})"
        keep = keep_known(log[ITEM], table.where, pd.Index(cat[ITEM]), table.file, columns[ITEM], bad, what,
                          table.unit)
        log = log[keep].reset_index(drop=True)
    inter = make_interactions(log[USER].to_numpy(), log[ITEM].to_numpy(), domain=_event_domains(log, cat, domain),
                              event=log[EVENT].to_numpy() if EVENT in log else event,
                              timestamp=log[TIME] if TIME in log else None,
                              rating=log[RATING] if RATING in log else None)
    from_frame = isinstance(path, pd.DataFrame)
    if name is None:
        name = "table" if from_frame else PurePosixPath(str(path).split("?")[0]).name.split(".")[0]
    meta = {"source": "<DataFrame>" if from_frame else str(path), "columns": dict(columns)}
    bad.publish(meta, name)
    return Dataset(inter, cat, name, meta)
