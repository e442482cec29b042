"""One schema for every data set: an interaction log plus an item catalogue.

Interactions (one row per event), pandas columns:
    user_id  str      who
    item_id  str      what (unique across domains)
    domain   str      scene / platform; "default" when the source has one domain
    event    str      event type ("rating", "click", "purchase", ...)
    timestamp float   seconds since epoch; NaN when the source has order only
    rating   float    optional explicit rating; NaN when absent

Row order is meaningful: within a user, ties and missing timestamps keep file order.

Catalogue (one row per item): item_id, domain, title, then any text fields
(category, description, brand, ...). Every logged item must be in the catalogue;
catalogue items without events are allowed (cold items known by text only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

USER, ITEM, DOMAIN, EVENT, TIME, RATING = "user_id", "item_id", "domain", "event", "timestamp", "rating"
INTERACTION_COLUMNS = [USER, ITEM, DOMAIN, EVENT, TIME, RATING]
TITLE = "title"
CATALOGUE_REQUIRED = [ITEM, DOMAIN, TITLE]
DEFAULT_DOMAIN = "default"


class DataError(ValueError):
    """Bad input, with the place it was found: file, line (1-based) and field."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field = file, line, field
        where = ", ".join(
            part for part in (
                f"file {file}" if file else "",
                f"line {line}" if line is not None else "",
                f"field {field!r}" if field else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)


def make_interactions(
    users, items, *, domain=DEFAULT_DOMAIN, event="interaction", timestamp=None, rating=None
) -> pd.DataFrame:
    """Build a schema-conformant interaction frame from columns (scalars broadcast)."""
    n = len(users)
    frame = pd.DataFrame({
        USER: pd.Series(users, dtype=str).to_numpy(dtype=object) if n else np.array([], dtype=object),
        ITEM: pd.Series(items, dtype=str).to_numpy(dtype=object) if n else np.array([], dtype=object),
    })
    frame[DOMAIN] = domain if np.isscalar(domain) else pd.Series(domain, dtype=str).to_numpy(dtype=object)
    frame[EVENT] = event if np.isscalar(event) else pd.Series(event, dtype=str).to_numpy(dtype=object)
    frame[TIME] = np.nan if timestamp is None else np.asarray(timestamp, dtype=np.float64)
    frame[RATING] = np.nan if rating is None else np.asarray(rating, dtype=np.float64)
    return frame[INTERACTION_COLUMNS]


def make_catalogue(item_ids, titles, *, domain=DEFAULT_DOMAIN, **text_fields) -> pd.DataFrame:
    """Build a catalogue frame; extra keyword columns become text fields."""
    frame = pd.DataFrame({ITEM: pd.Series(item_ids, dtype=str).to_numpy(dtype=object)})
    frame[DOMAIN] = domain if np.isscalar(domain) else pd.Series(domain, dtype=str).to_numpy(dtype=object)
    frame[TITLE] = pd.Series(titles, dtype=str).fillna("").to_numpy(dtype=object)
    for name, values in text_fields.items():
        frame[name] = pd.Series(values, dtype=str).fillna("").to_numpy(dtype=object)
    return frame


@dataclass
class Dataset:
    """An interaction log and its catalogue, validated against the schema."""

    interactions: pd.DataFrame
    catalogue: pd.DataFrame
    name: str = "dataset"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "Dataset":
        for col in INTERACTION_COLUMNS:
            if col not in self.interactions.columns:
                raise DataError(f"interactions lack the column {col!r}", file=self.name, field=col)
        for col in CATALOGUE_REQUIRED:
            if col not in self.catalogue.columns:
                raise DataError(f"catalogue lacks the column {col!r}", file=self.name, field=col)
        dup = self.catalogue[ITEM].duplicated()
        if dup.any():
            first = self.catalogue.loc[dup, ITEM].iloc[0]
            raise DataError(f"item id {first!r} appears twice in the catalogue", file=self.name, field=ITEM)
        # get_indexer on an Index is much faster than Series.isin for Arrow-backed strings
        unknown = pd.Series(pd.Index(self.catalogue[ITEM]).get_indexer(self.interactions[ITEM]) < 0)
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(
                f"item {self.interactions[ITEM].iloc[row]!r} is in the log but not in the catalogue "
                f"({int(unknown.sum())} such events)", file=self.name, line=row + 1, field=ITEM)
        return self

    # -- conveniences -------------------------------------------------------------
    @property
    def domains(self) -> list[str]:
        return sorted(self.catalogue[DOMAIN].unique().tolist())

    def summary(self) -> dict:
        inter = self.interactions
        return {
            "name": self.name,
            "users": int(inter[USER].nunique()),
            "items_in_log": int(inter[ITEM].nunique()),
            "items_in_catalogue": int(len(self.catalogue)),
            "interactions": int(len(inter)),
            "domains": self.domains,
            "has_timestamps": bool(inter[TIME].notna().any()),
        }

    def chronological(self) -> pd.DataFrame:
        """Interactions sorted by user then time; ties and missing times keep file order."""
        inter = self.interactions.reset_index(drop=True)
        # Missing times sort as -inf, so order-only data keeps each user's file order.
        order = np.lexsort((np.arange(len(inter)), inter[TIME].fillna(-np.inf).to_numpy(), inter[USER].to_numpy()))
        return inter.iloc[order].reset_index(drop=True)

    def with_interactions(self, interactions: pd.DataFrame, suffix: str = "") -> "Dataset":
        return Dataset(interactions.reset_index(drop=True), self.catalogue, self.name + suffix, dict(self.meta))

    # -- Parquet on disk (local paths or any fsspec URL) ---------------------------
    def to_parquet(self, directory: str, *, storage_options: dict | None = None) -> None:
        """interactions.parquet + catalogue.parquet in `directory` (local or an fsspec URL;
        `storage_options` go to fsspec, e.g. s3fs's endpoint_url, key, secret)."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(directory), **(storage_options or {}))
        fs.makedirs(root, exist_ok=True)
        with fs.open(f"{root}/interactions.parquet", "wb") as fh:
            self.interactions.to_parquet(fh, index=False)
        with fs.open(f"{root}/catalogue.parquet", "wb") as fh:
            self.catalogue.to_parquet(fh, index=False)

    @classmethod
    def from_parquet(cls, directory: str, name: str | None = None, *,
                     storage_options: dict | None = None) -> "Dataset":
        """The Dataset written by `to_parquet` (a missing file or bucket is a DataError naming it)."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(directory), **(storage_options or {}))
        for part in ("interactions", "catalogue"):
            if not fs.exists(f"{root}/{part}.parquet"):
                raise DataError(f"missing {part}.parquet", file=str(directory))
        with fs.open(f"{root}/interactions.parquet", "rb") as fh:
            inter = pd.read_parquet(fh)
        with fs.open(f"{root}/catalogue.parquet", "rb") as fh:
            cat = pd.read_parquet(fh)
        return cls(inter, cat, name or Path(str(directory)).name)
