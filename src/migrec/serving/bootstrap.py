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
    """Append a data set's interaction log to the store in order (timestamps missing -> 0)."""
    frame = interactions[["user_id", "item_id", "domain", "event", "timestamp"]]
    times = np.nan_to_num(frame["timestamp"].to_numpy(dtype=np.float64), nan=0.0)
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


def retrain_version(store, data_dir, live, cache_dir=True) -> dict:
    """Train a fresh model of the live version's kind and hyper-parameters on every event now in
    the store (users deleted since are not in it: this is how their influence leaves the weights),
    save it as the next version and make it live. Returns the version row."""
    from ..data.schema import Dataset

    upto = store.last_seq()
    events = store.events(upto_seq=upto).drop(columns="seq").assign(rating=np.nan)
    dataset = Dataset(events.reset_index(drop=True), live.catalogue.reset_index(), name="store")
    text = live.model.encoder_info() is not None
    split = pipeline.prepare_split(dataset, encoder=live.encoder_spec if text else None, cache_dir=cache_dir,
                                   template=live.template)
    started = time.time()
    estimator = live.model.clone()          # same kind and settings; fit starts from scratch
    estimator.fit(split.train, split.valid)
    taken = [v["version"] for v in store.versions()]
    out = write_model_folder(estimator, split.train.catalogue, Path(data_dir) / "versions" / f"v{max(taken) + 1:04d}",
                             live.encoder_spec if text else None, live.template, {"dataset": "store", "path": None})
    version = store.add_version(f"versions/{out.name}", events_upto=upto,
                                metrics={"valid_ndcg@10": getattr(estimator, "valid_ndcg_", None)},
                                parent=live.version, note=f"retrained from scratch on the store's {len(events)} "
                                                          f"events in {time.time() - started:.0f} s")
    store.set_live(version)
    return store.live_version()


def import_dataset(store, versions_dir, kind: str, path: str | None = None, model: str = "interest-text+id",
                   blend: bool = True, encoder: str = "st", template: str | None = None, params: dict | None = None,
                   cache_dir=True, progress: bool = True) -> dict:
    """Store a data set's catalogue and log, train `model` on it (wrapped in the migration-aware
    recency blend when `blend`), save it as version 1 and make it live. Returns the version row."""
    from ..drift.adaptation import AdaptiveBlend

    if store.live_version() is not None:
        raise ValueError(f"the store at {store.url} already serves a model; import into an empty store")
    started = time.time()
    dataset = pipeline.load_dataset(kind, path)
    store.add_items(catalogue_rows(dataset.catalogue), replace=True)
    n = store_log(store, dataset.interactions, progress=progress)
    text = model in pipeline.TEXT_MODELS or blend
    split = pipeline.prepare_split(dataset, encoder=encoder if text else None, cache_dir=cache_dir,
                                   template=template)
    estimator = pipeline.build_model(model, **(params or {}))
    if blend:
        estimator = AdaptiveBlend(base=estimator)
    log.info("training %s on %d events", estimator.name, split.train.n_interactions)
    estimator.fit(split.train, split.valid)
    # numbered like the updater's versions: the first folder is v0001
    out = write_model_folder(estimator, split.train.catalogue, Path(versions_dir) / "v0001",
                             encoder if text else None, template, {"dataset": kind, "path": path})
    version = store.add_version(f"{Path(versions_dir).name}/{out.name}", events_upto=store.last_seq(),
                                metrics={"valid_ndcg@10": getattr(estimator, "valid_ndcg_", None)},
                                note=f"imported {kind}: {n} events; trained {estimator.name} "
                                     f"in {time.time() - started:.0f} s")
    store.set_live(version)
    return store.live_version()
