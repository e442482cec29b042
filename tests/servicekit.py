"""A small real world for the service tests: 300 MovieLens-100K users, items split into two
domains by release year ("classic" before 1990, "recent" from 1990), a tiny interest model in the
migration-aware blend, text from the hashing encoder (no weights to download), imported into a
store by the same `import_dataset` that `migrec import` runs."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from migrec import pipeline
from migrec.data.schema import Dataset

ENCODER = "hashing:64"
PARAMS = dict(hidden=32, layers=1, heads=1, max_len=50, epochs=3, patience=3, device="cpu", seed=0)


def year(title: str) -> int:
    found = re.findall(r"\((\d{4})\)", str(title))
    return int(found[-1]) if found else 1995


def two_domain_data(shared_data: Path, out: Path, users: int = 300) -> Path:
    """A parquet data set (Dataset.to_parquet) of the first `users` users of ml-100k."""
    data = pipeline.load_dataset("ml-100k", str(shared_data / "ml-100k"))
    keep = sorted(data.interactions["user_id"].unique(), key=int)[:users]
    log = data.interactions[data.interactions["user_id"].isin(keep)].copy()
    cat = data.catalogue[data.catalogue["item_id"].isin(log["item_id"].unique())].copy()
    cat["domain"] = np.where(cat["title"].map(year) < 1990, "classic", "recent")
    log["domain"] = log["item_id"].map(cat.set_index("item_id")["domain"])
    Dataset(log.reset_index(drop=True), cat.reset_index(drop=True), name="ml-100k-2dom").to_parquet(str(out))
    return out


def imported_data_dir(shared_data: Path, root: Path) -> Path:
    """A service data directory (store.db + versions/v0001) with the small world imported."""
    from migrec.serving import Store
    from migrec.serving.bootstrap import import_dataset

    data = two_domain_data(shared_data, root / "dataset")
    data_dir = root / "service"
    store = Store.open(f"sqlite:///{data_dir / 'store.db'}")
    import_dataset(store, data_dir / "versions", "parquet", str(data), model="interest-text+id", blend=True,
                   encoder=ENCODER, params=PARAMS, cache_dir=None, progress=False)
    store.close()
    return data_dir


def copy_data_dir(source: Path, target: Path) -> Path:
    """A private copy of an imported data directory (version paths are relative to it)."""
    shutil.copytree(source, target)
    return target
