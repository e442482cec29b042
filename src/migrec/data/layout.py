"""The prepared layout both preparation engines write (Polars: `prepare`, Spark: `spark`), and the
helpers they share: options, result, reading the log's files and the catalogue, writing the manifest."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from .cleaning import CleaningReport, StepReport
from .schema import DOMAIN, EVENT, ITEM, TIME, USER, DataError
from .tabular import role_mapping

# -- the prepared layout ----------------------------------------------------------------------
USER_CODE, ITEM_CODE, POSITION, SPLIT = "user_code", "item_code", "position", "split"
EVENT_COLUMNS = [USER_CODE, ITEM_CODE, TIME, POSITION, SPLIT]
EVENTS_DIR, USERS_FILE, ITEMS_FILE, MANIFEST_FILE = "events", "users.parquet", "items.parquet", "manifest.json"
ENGINES = ("polars", "spark")
DEFAULT_EVENT = "interaction"  # the event type load_table gives a log without an event column
ROW = "_row"                   # place of an event in the log (internal column)
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


@dataclass
class PrepareOptions:
    """The cleaning and split parameters shared by every engine (same meaning as `clean`)."""

    dedup: bool = True
    keep: str = "last"
    user_k: int = 0
    item_k: int = 0
    min_history: int = 3

    def __post_init__(self):
        if self.keep not in ("first", "last"):
            raise ValueError(f"keep must be 'first' or 'last', not {self.keep!r}")
        for name in ("user_k", "item_k", "min_history"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")

    @property
    def split_min(self) -> int:
        """Users need this many events after cleaning (leave-one-out needs 3)."""
        return max(int(self.min_history), 3)

    def step_names(self) -> list[str]:
        names = []
        if self.dedup:
            names.append(f"deduplicate (keep={self.keep})")
        if self.user_k > 0 or self.item_k > 0:
            names.append(f"k-core (users>={self.user_k}, items>={self.item_k})")
        if self.min_history > 0:
            names.append(f"min history {self.min_history}")
        return names


@dataclass
class PrepareResult:
    """What a preparation run wrote and counted."""

    out: str
    engine: str
    events: int
    users: int
    items: int                  # catalogue size (the item universe)
    report: CleaningReport
    seconds: float
    buckets: int = 1
    split_counts: dict = field(default_factory=dict)
    dropped_short: int = 0      # users cut by the split's own 3-event minimum (as leave_one_out)

    def as_dict(self) -> dict:
        return {"out": self.out, "engine": self.engine, "events": self.events, "users": self.users,
                "items": self.items, "seconds": round(self.seconds, 3), "buckets": self.buckets,
                "split_counts": self.split_counts, "dropped_short": self.dropped_short,
                "cleaning": self.report.as_dict()}


# -- shared helpers (both engines) --------------------------------------------------------------
def filesystem(url: str, storage_options: dict | None = None):
    """(fsspec filesystem, path inside it) for a local path or any fsspec URL."""
    import fsspec

    return fsspec.core.url_to_fs(str(url), **(storage_options or {}))


def parquet_files(url: str, storage_options: dict | None = None) -> tuple[object, list[str]]:
    """The Parquet files of a log (one file, or every Parquet file under a folder), in path order.

    Path order is the log's order: events of earlier files come first."""
    fs, root = filesystem(url, storage_options)
    if not fs.exists(root):
        raise DataError("no such file or folder", file=str(url))
    if fs.isdir(root):
        files = sorted(p for p in fs.find(root)
                       if PurePosixPath(p).suffix.lower() in _PARQUET_SUFFIXES
                       and not any(part.startswith(("_", ".")) for part in PurePosixPath(p).relative_to(root).parts))
    else:
        files = [root]
    if not files:
        raise DataError("no Parquet files (*.parquet) in this folder", file=str(url))
    return fs, files


def log_dataset(url: str, storage_options: dict | None = None):
    """The log as a pyarrow dataset (hive partition columns included), files in path order."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, files = parquet_files(url, storage_options)
    root = None
    _, path = filesystem(url, storage_options)
    if fs.isdir(path):
        root = path
    return ds.dataset(files, format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs)),
                      partitioning=ds.partitioning(flavor="hive") if root else None,
                      partition_base_dir=root)


def log_mapping(names: list[str], columns: dict | None, where: str) -> dict:
    """role -> source column of the log (default: the schema names present)."""
    columns = role_mapping(names, columns, (USER, ITEM, TIME, EVENT, DOMAIN), "log")
    for role, source in columns.items():
        if source not in names:
            raise DataError(f"missing column {source!r} (mapped to {role!r}); the log has {names}",
                            file=where, field=source)
    return dict(columns)


def read_catalogue(url: str | None, storage_options: dict | None = None) -> pd.DataFrame | None:
    """The catalogue (a Parquet file with an item_id column; its row order is the item order)."""
    if url is None:
        return None
    import pyarrow.parquet as pq

    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        raise DataError("no such file", file=str(url))
    if fs.isdir(path):
        raise DataError("the catalogue must be one Parquet file (its row order is the item order)", file=str(url))
    with fs.open(path, "rb") as fh:
        frame = pq.read_table(fh).to_pandas()
    if ITEM not in frame.columns:
        raise DataError(f"the catalogue lacks the column {ITEM!r} (has {list(frame.columns)})",
                        file=str(url), field=ITEM)
    frame[ITEM] = frame[ITEM].astype(str)
    dup = frame[ITEM].duplicated()
    if dup.any():
        raise DataError(f"item id {frame.loc[dup, ITEM].iloc[0]!r} appears twice in the catalogue",
                        file=str(url), field=ITEM)
    return frame.reset_index(drop=True)


def items_table(catalogue: pd.DataFrame) -> pd.DataFrame:
    """items.parquet: item_code then the catalogue's columns (item_id first)."""
    cols = [ITEM] + [c for c in catalogue.columns if c != ITEM]
    frame = catalogue[cols].reset_index(drop=True)
    for c in cols:
        if frame[c].dtype == object or str(frame[c].dtype).startswith("str"):
            frame[c] = frame[c].astype(str)
    frame.insert(0, ITEM_CODE, np.arange(len(frame), dtype=np.int64))
    return frame


def write_frame(frame, fs, path: str) -> None:
    """Write a pandas or polars frame to `path` on `fs` as Parquet."""
    with fs.open(path, "wb") as fh:
        if isinstance(frame, pd.DataFrame):
            frame.to_parquet(fh, index=False)
        else:
            frame.write_parquet(fh)


def report_from_sizes(sizes: list[tuple[int, int, int]], names: list[str]) -> CleaningReport:
    """A CleaningReport from (events, users, items) before the first step and after each step."""
    e, u, i = sizes[0]
    report = CleaningReport(e, u, i)
    for name, before, after in zip(names, sizes[:-1], sizes[1:]):
        report.steps.append(StepReport(name, before[0] - after[0], before[1] - after[1], before[2] - after[2],
                                       *after))
    return report


def write_manifest(fs, root: str, result: PrepareResult, options: PrepareOptions, source: str,
                   catalogue: str | None) -> None:
    manifest = {"format": "migrec-prepared", "version": 1, "source": source, "catalogue": catalogue,
                "options": {"dedup": options.dedup, "keep": options.keep, "user_k": options.user_k,
                            "item_k": options.item_k, "min_history": options.min_history},
                "layout": {"events": f"{EVENTS_DIR}/*.parquet", "event_columns": EVENT_COLUMNS,
                           "users": USERS_FILE, "items": ITEMS_FILE},
                **result.as_dict()}
    with fs.open(f"{root}/{MANIFEST_FILE}", "w") as fh:
        fh.write(json.dumps(manifest, indent=1) + "\n")


def clear_output(fs, root: str) -> None:
    """Make `root` an empty prepared folder (an earlier events/ folder would mix two runs)."""
    fs.makedirs(root, exist_ok=True)
    if fs.exists(f"{root}/{EVENTS_DIR}"):
        fs.rm(f"{root}/{EVENTS_DIR}", recursive=True)
    fs.makedirs(f"{root}/{EVENTS_DIR}", exist_ok=True)
