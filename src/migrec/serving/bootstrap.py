"""From a data set to a servable store: load, store the catalogue and the log, train version 1.

`migrec import` (and `migrec serve` with a data set and no model) run `import_dataset`. The
events go into the store (the only home of user data); the model folder written for version 1
holds weights, item ids, the catalogue and the encoder spec, no user data.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import pipeline
from .updater import next_version_path

log = logging.getLogger(__name__)

SERVING_FILE = "serving.json"      # in a model folder: how to encode posted item text


def catalogue_rows(catalogue) -> list[dict]:
    """Store rows from a catalogue frame: the text fields other than id/domain/title go to `fields`."""
    extra = [c for c in catalogue.columns if c not in ("item_id", "domain", "title")]
    rows = []
    for rec in catalogue.to_dict("records"):
        fields = {c: str(rec[c]) for c in extra if rec[c] is not None and str(rec[c]) not in ("", "nan", "None")}
        rows.append({"item_id": str(rec["item_id"]), "domain": str(rec["domain"]), "title": str(rec["title"]),
                     "fields": fields, "vector": None, "encoder": None, "source": "catalogue"})
    return rows


def store_log(store, interactions, batch: int = 5000, progress: bool = True) -> int:
    """Append a data set's interaction log to the store in time order (ties and missing timestamps,
    stored as 0, keep file order): seqs then follow time, so a user's stored history is the
    chronological one the model was trained on (ML-100K's u.data, for one, is not time-sorted)."""
    frame = interactions[["user_id", "item_id", "domain", "event", "timestamp"]]
    times = np.nan_to_num(frame["timestamp"].to_numpy(dtype=np.float64), nan=0.0)
    order = np.argsort(times, kind="stable")
    frame, times = frame.iloc[order], times[order]
    stored = 0
    bar = tqdm(total=len(frame), desc="storing events", unit="ev", disable=not progress)
    for lo in range(0, len(frame), batch):
        part = frame.iloc[lo:lo + batch]
        rows = [{"user_id": str(u), "item_id": str(i), "domain": str(d), "event": str(e), "timestamp": float(t),
                 "event_id": None} for u, i, d, e, t in zip(part["user_id"], part["item_id"], part["domain"],
                                                            part["event"], times[lo:lo + batch])]
        stored += store.add_events(rows)["accepted"]
        bar.update(len(rows))
    bar.close()
    return stored


def write_model_folder(model, catalogue, out, encoder: str | None, template: str | None, source: dict) -> Path:
    out = Path(out)
    model.save(out)
    catalogue.to_parquet(out / "catalogue.parquet", index=False)
    (out / SERVING_FILE).write_text(json.dumps({"encoder": encoder, "template": template}, indent=1) + "\n")
    (out / "data.json").write_text(json.dumps(source, indent=1) + "\n")
    return out


def train_version(store, versions_dir, estimator, dataset, encoder: str | None, template: str | None,
                  source: dict, events_upto: int, note: str, parent: int | None = None, cache_dir=True) -> dict:
    """Fit `estimator` on `dataset` (leave-one-out split, item text from `encoder` when given), save
    it as the next version folder, register it and make it live. Returns the version row."""
    started = time.time()
    split = pipeline.prepare_split(dataset, encoder=encoder, cache_dir=cache_dir, template=template)
    log.info("training %s on %d events", estimator.name, split.train.n_interactions)
    estimator.fit(split.train, split.valid)
    out = write_model_folder(estimator, split.train.catalogue, next_version_path(store, versions_dir),
                             encoder, template, source)
    version = store.add_version(f"{out.parent.name}/{out.name}", events_upto=events_upto,
                                metrics={"valid_ndcg@10": getattr(estimator, "valid_ndcg_", None)}, parent=parent,
                                note=f"{note}; trained {estimator.name} in {time.time() - started:.0f} s")
    store.set_live(version)
    return store.live_version()


def retrain_version(store, data_dir, live, cache_dir=True) -> dict:
    """Train a fresh model of the live version's kind and hyper-parameters on every event now in
    the store (users deleted since are not in it: this is how their influence leaves the weights),
    save it as the next version and make it live. Returns the version row."""
    from ..data.schema import Dataset

    upto = store.last_seq()
    events = store.events(upto_seq=upto).drop(columns="seq").assign(rating=np.nan)
    dataset = Dataset(events.reset_index(drop=True), live.catalogue.reset_index(), name="store")
    encoder = live.encoder_spec if live.model.encoder_info() is not None else None
    return train_version(store, Path(data_dir) / "versions", live.model.clone(),   # same kind; fit starts afresh
                         dataset, encoder, live.template, {"dataset": "store", "path": None}, upto,
                         f"retrained from scratch on the store's {len(events)} events", parent=live.version,
                         cache_dir=cache_dir)


def import_dataset(store, versions_dir, kind: str, path: str | None = None, model: str = "interest-text+id",
                   blend: bool = True, encoder: str = "st", template: str | None = None, params: dict | None = None,
                   cache_dir=True, progress: bool = True) -> dict:
    """Store a data set's catalogue and log, train `model` on it (wrapped in the migration-aware
    recency blend when `blend`), save it as version 1 and make it live. Returns the version row."""
    from ..drift.adaptation import AdaptiveBlend

    if store.live_version() is not None:
        raise ValueError(f"the store at {store.url} already serves a model; import into an empty store")
    dataset = pipeline.load_dataset(kind, path)
    store.add_items(catalogue_rows(dataset.catalogue), replace=True)
    n = store_log(store, dataset.interactions, progress=progress)
    estimator = pipeline.build_model(model, **(params or {}))
    if blend:
        estimator = AdaptiveBlend(base=estimator)
    text = model in pipeline.TEXT_MODELS or blend
    return train_version(store, versions_dir, estimator, dataset, encoder if text else None, template,
                         {"dataset": kind, "path": path}, store.last_seq(), f"imported {kind}: {n} events",
                         cache_dir=cache_dir)
