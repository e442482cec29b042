"""One servable model version: recommend (with occlusion explanations), interests, similar items
and new items, over a model folder (`migrec train` output or a service version folder).

A LiveModel is immutable once built, so any number of threads may read it; `with_items`
returns a new one made from a clone of the model and leaves this one serving. Unknown ids
raise KeyError (the app's 404); bad arguments raise ValueError naming the field.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.schema import DEFAULT_DOMAIN, DOMAIN, ITEM, TITLE
from ..drift.adaptation import AdaptiveBlend
from ..drift.detection import MigrationDetector
from ..drift.profiles import History, timeline
from ..drift.report import migrations
from ..drift.topics import TopicSpace, topic_space
from ..encoders import ItemTextTemplate, encode_catalogue, make_encoder
from ..encoders.text import clean_value
from ..models import retrieval
from ..registry import load_model

SERVING_FILE, DATA_FILE, CATALOGUE_FILE = "serving.json", "data.json", "catalogue.parquet"
CALIBRATION_USERS = 1000   # most histories (>= 20 events, evenly spread) the detector is calibrated on
ANN_CALIBRATION = 256      # random histories whose queries the ANN index's nprobe is calibrated on,
ANN_RECALL = 0.98          # for this recall@10 against exact top-10 (issue 11's target)


def _text_vectors(model) -> np.ndarray | None:
    """The model's own item text vectors: InterestModel's `text_vectors_`, AdaptiveBlend's `item_vectors_`."""
    for name in ("text_vectors_", "item_vectors_"):
        if getattr(model, name, None) is not None:
            return np.asarray(getattr(model, name), dtype=np.float32)
    return None


def _takes_items(model) -> bool:
    """Whether the model (and the model it wraps, for AdaptiveBlend) has add_items."""
    return hasattr(model, "add_items") and hasattr(getattr(model, "base", model), "add_items")


def _rows_frame(rows) -> pd.DataFrame:
    """Catalogue rows (item_id, domain, title, fields{...}) as a frame indexed by item_id."""
    out = []
    for n, row in enumerate(rows):
        for key in (ITEM, TITLE):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"item row {n}: field {key!r} must be a non-empty string")
        fields = row.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError(f"item row {n}: field 'fields' must be an object of text fields")
        out.append({**{str(k): v for k, v in fields.items()}, ITEM: row[ITEM],
                    DOMAIN: str(row.get(DOMAIN) or DEFAULT_DOMAIN), TITLE: row[TITLE]})
    return pd.DataFrame(out, columns=None if out else [ITEM, DOMAIN, TITLE]).set_index(ITEM)


def _encode(encoder, template: str | None, rows) -> np.ndarray:
    """Text vectors of item rows: the rows rendered through the item text template, then encoded."""
    texts = (ItemTextTemplate(template) if template else ItemTextTemplate()).render(_rows_frame(rows).reset_index())
    return np.asarray(encoder.encode(texts), dtype=np.float32)


def _grow_topics(topics, catalogue: pd.DataFrame, n_new: int, text) -> TopicSpace:
    """The topic space with `n_new` rows appended to the catalogue: categories of the new rows when
    they are all known (else all categories again); text clusters: each new item's nearest item's topic."""
    if topics.kind == "categories":
        try:
            part = topic_space(catalogue.iloc[-n_new:].reset_index())
            rows = np.zeros((n_new, topics.n_topics))
            rows[:, [topics.names.index(n) for n in part.names]] = part.item_topics
        except ValueError:                    # no or new categories among the new rows
            return topic_space(catalogue.reset_index(), text)
    else:
        unit = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        rows = topics.item_topics[np.argmax(unit[-n_new:] @ unit[:-n_new].T, axis=1)]
    return TopicSpace(topics.names, np.vstack([topics.item_topics, rows]), topics.kind)


def _timeline(rows: np.ndarray, names: list, times: np.ndarray, top: int, periods: int) -> dict:
    """Topic shares per period of `every` events (about `periods` periods): the `top` topics of the
    whole history as series, the rest summed as "other"; each period's first event date."""
    every = max(1, -(-len(rows) // periods))
    table = timeline(rows, every=every)
    shares = table.drop(columns="n_events").to_numpy()
    order = [int(i) for i in np.argsort(-rows.sum(axis=0), kind="stable")[:top] if rows[:, i].sum() > 0]
    series = [{"topic": names[i], "shares": shares[:, i].round(4).tolist()} for i in order]
    rest = 1.0 - shares[:, order].sum(axis=1)
    if len(order) < len(names) and rest.max() > 1e-6:
        series.append({"topic": "other", "shares": np.clip(rest, 0, 1).round(4).tolist()})
    starts = [int(x) for x in table.index]
    dates = [str(np.datetime64(int(times[i]), "s").astype("datetime64[D]")) if np.isfinite(times[i]) and times[i] > 0
             else None for i in starts]
    return {"every": every, "periods": [{"start": i, "date": d, "events": int(n)}
                                        for i, d, n in zip(starts, dates, table["n_events"])], "series": series}


def _moments(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean row and (population) covariance of the item matrix, float64, in blocks: what a row of
    scores q · v over every item has as mean (q · mean) and variance (q C q)."""
    d = matrix.shape[1]
    total, gram = np.zeros(d), np.zeros((d, d))
    for lo in range(0, len(matrix), 65536):
        block = matrix[lo:lo + 65536].astype(np.float64)
        total += block.sum(axis=0)
        gram += block.T @ block
    mean = total / len(matrix)
    return mean, gram / len(matrix) - np.outer(mean, mean)


def _shares(rows: np.ndarray, names: list) -> list[dict]:
    dist = rows.mean(axis=0) if len(rows) else np.zeros(len(names))
    return [{"topic": names[i], "share": float(dist[i])} for i in np.argsort(-dist, kind="stable") if dist[i] > 0]


class LiveModel:
    """One model version, read-only; build it with `from_dir`."""

    max_history = 200      # newest events a recommendation reads
    explain_window = 10    # newest events occlusion explains from (one scoring row each: the cost of explain)
    short_events = 10      # events of the short-term interest profile
    timeline_periods = 40  # periods of the interest timeline (each `ceil(events / 40)` events)
    timeline_topics = 8    # topics drawn in the timeline (the rest summed as "other")

    def __init__(self, model, catalogue: pd.DataFrame, version: int, encoder: str | None = None,
                 template: str | None = None, text_vectors=None, topics=None, detector=None, cold=None,
                 path=None, _encoder_box: dict | None = None, ann=None):
        """`catalogue`: indexed by item_id, rows in `model.item_ids_` order; see from_dir. `ann`: the
        ANN index of the version this one grew from (with_items), updated rather than rebuilt."""
        self.model, self.catalogue, self.version, self.path = model, catalogue, int(version), path
        self.encoder_spec, self.template = encoder, template
        self.text_vectors, self.topics, self.detector = text_vectors, topics, detector
        self._box = _encoder_box or {"lock": threading.Lock(), "encoder": None}
        info = model.encoder_info() or {}
        self.encoder_id = info.get("model_id") or (self._encoder().model_id if encoder else None)
        ids = model.item_ids_
        if len(catalogue) != len(ids) or not np.array_equal(catalogue.index.to_numpy(object), ids):
            raise ValueError("catalogue rows must follow the model's item_ids_")
        self._index = {it: i for i, it in enumerate(ids)}
        self._domains = catalogue[DOMAIN].astype(str).to_numpy(object)
        self._titles = catalogue[TITLE].to_numpy(object)
        self._domain_items = {d: np.flatnonzero(self._domains == d) for d in sorted(set(self._domains))}
        self._cold = np.zeros(len(ids), bool) if cold is None else np.asarray(cold, bool)
        self._search = self._names = None       # built at first use (search_items, _model_interests)
        # retrieval (models.retrieval): the dot-product model's item matrix (an AdaptiveBlend's: its
        # base's) and, from the model's `ann_threshold` items on, its FAISS index, built here
        self._dot = model.base if isinstance(model, AdaptiveBlend) else model
        matrix = self._dot.item_matrix()        # also builds a torch model's inference cache now
        self._ann = self._moments = None
        threshold = getattr(self._dot, "ann_threshold", None)
        if matrix is not None and threshold is not None and len(ids) >= threshold:
            self._ann = self._dot.ann_index() if ann is None else retrieval.update(ann, matrix)
            self._moments = _moments(matrix) if self._dot is not model else None
            if self._moments is not None:
                # the model's ann_index is calibrated on its own queries; a blend queries it with other
                # vectors (its long/short mix), so nprobe also has to reach the target recall on those
                sample = retrieval.random_histories(len(ids), self.max_history, ANN_CALIBRATION)
                self._ann = retrieval.calibrate_on(self._ann, self._queries(sample)[0], ANN_RECALL)
        matrix = text_vectors if matrix is None else matrix
        norms = None if matrix is None else np.linalg.norm(matrix, axis=1, keepdims=True)
        if self._ann is not None and matrix is self._ann.matrix and np.abs(norms - 1).max() < 1e-4:
            self._unit = matrix                 # unit rows already: similar() searches the index
        else:
            self._unit = None if matrix is None else (matrix / np.maximum(norms, 1e-12)).astype(np.float32)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path, version: int, store_items=(), histories=None, encoder: str | None = None) -> "LiveModel":
        """Load a model folder: the model, catalogue.parquet, serving.json ({"encoder", "template"}) or
        data.json's "encoder"; `encoder` (a spec) overrides both and must match the model's encoder.
        `store_items` rows unknown to the model are added (their stored vectors) when it takes items;
        `histories` calibrate the migration detector when the model has none: a Histories, or a
        function returning one, called only then (a model with its own detector reads no history)."""
        path = Path(path)
        model = load_model(path)
        settings = json.loads((path / SERVING_FILE).read_text()) if (path / SERVING_FILE).exists() else {}
        data = json.loads((path / DATA_FILE).read_text()) if (path / DATA_FILE).exists() else {}
        spec = encoder or settings.get("encoder") or data.get("encoder")
        template = settings.get("template")
        trained = (model.encoder_info() or {}).get("model_id")
        made = make_encoder(spec).model_id if spec and trained else trained
        if made != trained:
            raise ValueError(f"encoder {spec!r} makes {made!r} vectors, but the model's item vectors were made "
                             f"by {trained!r}")
        catalogue = pd.read_parquet(path / CATALOGUE_FILE) if (path / CATALOGUE_FILE).exists() \
            else pd.DataFrame(columns=[ITEM, DOMAIN, TITLE])
        if ITEM not in catalogue.columns:
            raise ValueError(f"{path / CATALOGUE_FILE}: no {ITEM!r} column")
        catalogue = catalogue.assign(**{ITEM: catalogue[ITEM].astype(str)}).drop_duplicates(ITEM).set_index(ITEM)
        stored = list(store_items)
        extra = _rows_frame(stored)
        catalogue = pd.concat([catalogue, extra[~extra.index.isin(catalogue.index)]])
        new = [r for r, known in zip(stored, model.knows([r[ITEM] for r in stored])) if not known]
        if new and _takes_items(model):       # not serving yet: growing it in place is safe
            made = made or (make_encoder(spec).model_id if spec else None)
            wrong = [r[ITEM] for r in new if r.get("encoder") not in (None, made)]
            if wrong:
                raise ValueError(f"stored items {wrong[:5]} have vectors of another encoder than {made!r}")
            vectors = [r.get("vector") for r in new]
            vectors = np.stack(vectors).astype(np.float32) if all(v is not None for v in vectors) else \
                (_encode(make_encoder(spec), template, new) if spec else None)
            model.add_items([r[ITEM] for r in new], vectors,
                            domains=[str(r.get(DOMAIN) or DEFAULT_DOMAIN) for r in new], encoder=made)
        ids = model.item_ids_
        catalogue = catalogue.reindex(ids).assign(**{c: np.nan for c in (DOMAIN, TITLE) if c not in catalogue})
        catalogue[DOMAIN] = catalogue[DOMAIN].fillna(DEFAULT_DOMAIN).astype(str)
        catalogue[TITLE] = catalogue[TITLE].where(catalogue[TITLE].notna(), pd.Series(ids, index=ids))
        catalogue.index.name = ITEM
        vectors = _text_vectors(model)
        if vectors is None and spec:
            vectors = encode_catalogue(catalogue.reset_index(), make_encoder(spec), template,
                                       cache_dir=path.resolve().parent / "embedding-cache")
        try:
            topics = topic_space(catalogue.reset_index(), vectors)
        except ValueError:                    # no categories and no text vectors: no interests
            topics = None
        detector = getattr(model, "detector_", None)
        if detector is None and histories is not None and vectors is not None:
            histories = histories() if callable(histories) else histories
            index = {it: i for i, it in enumerate(ids)}
            users = [u for u in histories if len(histories.get(u)) >= 20]
            users = [users[j] for j in np.unique(np.linspace(0, len(users) - 1, CALIBRATION_USERS).astype(int))] \
                if users else []
            seqs = [vectors[[index[i] for i in histories.get(u) if i in index]] for u in users]
            try:
                detector = MigrationDetector().fit([s for s in seqs if len(s) >= 20])
            except ValueError:                # no history long enough to calibrate on
                detector = None
        base = getattr(model, "base", model)
        seen = getattr(base, "seen_", None)
        if seen is None:
            seen = getattr(base, "counts_", None)
        cold = None if seen is None else np.r_[np.asarray(seen) <= 0, np.ones(len(ids) - len(seen), bool)]
        return cls(model, catalogue, version, spec, template, vectors, topics, detector, cold, str(path))

    # -- items ------------------------------------------------------------------------------------
    def domains(self) -> list[str]:
        """The catalogue's domains, sorted."""
        return list(self._domain_items)

    @property
    def takes_items(self) -> bool:
        """Whether `with_items` can add items to this model."""
        return _takes_items(self.model)

    def _check_domain(self, domain) -> None:
        if domain is not None and domain not in self._domain_items:
            raise ValueError(f"field 'domain': unknown domain {domain!r} (known: {list(self._domain_items)})")

    def has_item(self, item_id) -> bool:
        return str(item_id) in self._index

    def domain_of(self, item_id) -> str | None:
        """The item's domain, or None for an unknown item (one lookup: the ingestion path)."""
        i = self._index.get(str(item_id))
        return None if i is None else str(self._domains[i])

    def title_of(self, item_id) -> str | None:
        """The item's title, or None for an unknown item (one lookup: history listings)."""
        i = self._index.get(str(item_id))
        return None if i is None else str(self._titles[i])

    def _position(self, item_id) -> int:
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise KeyError(f"unknown item {item_id!r}") from None

    def item(self, item_id) -> dict:
        """item_id, domain, title, fields (other non-empty text fields), cold (no training events)."""
        i = self._position(item_id)
        row = self.catalogue.iloc[i]
        fields = {k: clean_value(v) for k, v in row.items() if k not in (DOMAIN, TITLE)}
        return {ITEM: str(item_id), DOMAIN: self._domains[i], TITLE: self._titles[i],
                "fields": {k: v for k, v in fields.items() if v}, "cold": bool(self._cold[i])}

    def _brief(self, i: int, score: float) -> dict:
        return {ITEM: self.model.item_ids_[i], TITLE: self._titles[i], DOMAIN: self._domains[i], "score": score}

    def similar(self, item_id, k: int = 10, domain: str | None = None) -> list[dict]:
        """The k items nearest `item_id` by cosine of the model's item vectors (an AdaptiveBlend's: its
        base's; else text vectors). Unit item rows above the ANN threshold: from the FAISS index."""
        i = self._position(item_id)
        self._check_domain(domain)
        if self._unit is None:
            raise ValueError("this model version has no item vectors: similar items are not available")
        if self._ann is not None and self._unit is self._ann.matrix:
            if k < 1:
                raise ValueError(f"field 'k' must be >= 1, not {k}")
            allowed = None if domain is None else self._domain_items[domain]
            top, sims = retrieval.search(self._ann, self._unit[i][None], k, [np.array([i], np.int64)], allowed,
                                         exact_below=self._dot.ann_threshold)
            return [self._brief(j, float(s)) for j, s in zip(top[0], sims[0]) if np.isfinite(s)]
        sims = self._unit @ self._unit[i]
        if domain is not None:
            sims = np.where(self._domains == domain, sims, -np.inf)
        sims[i] = -np.inf
        return [self._brief(j, float(sims[j])) for j in self._top(sims, k)]

    def _encoder(self):
        with self._box["lock"]:
            if self._box["encoder"] is None:
                self._box["encoder"] = make_encoder(self.encoder_spec)
            return self._box["encoder"]

    def encode_items(self, rows) -> np.ndarray:
        """Text vectors [len(rows), dim] of item rows (item_id, domain, title, fields) by the model's encoder."""
        if not self.encoder_spec:
            raise ValueError("this model version has no text encoder (serving.json 'encoder') to encode items with")
        return _encode(self._encoder(), self.template, rows)

    def with_items(self, rows, vectors=None) -> "LiveModel":
        """A new LiveModel whose model (a clone) also knows these items; this one is unchanged.
        `vectors`: their text vectors [len(rows), dim] (None: encode_items(rows))."""
        if not self.takes_items:
            kind = type(getattr(self.model, "base", self.model)).__name__
            raise ValueError(f"{kind} models cannot take new items (no add_items): retrain with a text model")
        frame = _rows_frame(rows)
        clash = [i for i in frame.index if i in self._index] or list(frame.index[frame.index.duplicated()])
        if clash:
            raise ValueError(f"field 'item_id': items already known or repeated: {clash[:5]}")
        if vectors is None and self.encoder_spec:
            vectors = self.encode_items(rows)
        vectors = None if vectors is None else np.asarray(vectors, dtype=np.float32)
        if vectors is not None and (vectors.ndim != 2 or len(vectors) != len(frame)):
            raise ValueError(f"field 'vectors': shape {vectors.shape} for {len(frame)} new items")
        if vectors is None and self.text_vectors is not None:
            raise ValueError("field 'vectors': the new items need text vectors (no encoder is configured)")
        twin = self.model.clone()
        twin.add_items(list(frame.index), vectors, domains=list(frame[DOMAIN]), encoder=self.encoder_id)
        catalogue = pd.concat([self.catalogue, frame])
        catalogue.index.name = ITEM
        text = _text_vectors(twin)
        if text is None and self.text_vectors is not None:
            text = np.vstack([self.text_vectors, vectors])
        topics = None if self.topics is None else _grow_topics(self.topics, catalogue, len(frame), text)
        return LiveModel(twin, catalogue, self.version, self.encoder_spec, self.template, text, topics,
                         self.detector, np.r_[self._cold, np.ones(len(frame), bool)], self.path, self._box,
                         ann=self._ann)     # this index stays as it is: the twin's is a patched copy

    # -- histories --------------------------------------------------------------------------------
    def _events(self, history):
        """(positions in `history`, item indices, timestamps) of the events on items the model knows."""
        index = self._index
        found = [(n, index.get(str(e[0]), -1), e[2] if len(e) > 2 and e[2] is not None else np.nan)
                 for n, e in enumerate(history)]
        found = [f for f in found if f[1] >= 0]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        pos, idx, times = zip(*found)
        return np.asarray(pos, np.int64), np.asarray(idx, np.int64), np.asarray(times, np.float64)

    def _top(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Indices of the k best finite scores, best first (recommend_history's order)."""
        if k < 1:
            raise ValueError(f"field 'k' must be >= 1, not {k}")
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top[np.isfinite(scores[top])]

    # -- recommendations --------------------------------------------------------------------------
    def recommend(self, history, k: int = 10, domain: str | None = None, exclude=(), explain: bool = False,
                  popular=None) -> dict:
        """Top-k items of `domain` (None: all) for a history of (item_id, domain, timestamp), oldest first.

        Returns {"path", "items": [{"item_id", "title", "domain", "score"(, "because")}]} (+ "reason"
        when cold). path "warm": events on known items in `domain` (or any, when domain is None);
        "cross-domain": such events only in other domains (the whole history is scored either way,
        newest `max_history` events); "cold": none, answered by `popular(domain, k, exclude)` ->
        [(item_id, count)] with score = count (no items when popular is None). History items the
        model does not know are dropped; seen and `exclude` items never appear. explain: `because`
        lists up to 3 of the newest `explain_window` events whose removal lowers the item's score
        most: weight = score(h) - score(h without the event) > 0, position = index in `history`.
        """
        self._check_domain(domain)
        exclude = () if exclude is None else exclude
        if isinstance(exclude, str):
            raise ValueError("field 'exclude' must be a list of item ids, not one string")
        excluded = {str(e[0]) for e in history} | {str(x) for x in exclude}
        pos, idx, times = self._events(history)
        if not len(idx):
            return self._cold_answer(k, domain, excluded, explain, popular)
        in_domain = domain is None or bool((self._domains[idx] == domain).any())
        pos, idx, times = pos[-self.max_history:], idx[-self.max_history:], times[-self.max_history:]
        if self._ann is not None:       # a large catalogue: the model's FAISS index, exact scores of its top-k
            top, scores = self._retrieve(idx, k, domain, excluded)
        else:
            row = np.array(self.model.score_histories([idx])[0], dtype=np.float32, copy=True)
            row[np.isnan(row)] = -np.inf
            if domain is not None:
                keep = self._domain_items[domain]
                row, full = np.full_like(row, -np.inf), row
                row[keep] = full[keep]
            row[[self._index[i] for i in excluded if i in self._index]] = -np.inf
            top = self._top(row, k)
            scores = row[top]
        items = [self._brief(i, float(s)) for i, s in zip(top, scores)]
        if explain:
            for item, because in zip(items, self._because(idx, pos, times, top, scores)):
                item["because"] = because
        return {"path": "warm" if in_domain else "cross-domain", "items": items}

    def _because(self, idx, pos, times, top, scores) -> list[list[dict]]:
        """Occlusion: weight of event j for item i = score(h)[i] - score(h without j)[i], one batched call."""
        window = range(max(len(idx) - self.explain_window, 0), len(idx))
        if not len(top) or not len(window):
            return [[] for _ in top]
        occluded = self._item_scores([np.delete(idx, j) for j in window], top)
        weights = scores[None, :] - occluded                      # [events in window, k]
        out = []
        for c in range(len(top)):
            order = [w for w in np.argsort(-weights[:, c], kind="stable")[:3] if weights[w, c] > 0]
            out.append([{ITEM: self.model.item_ids_[idx[window[w]]], TITLE: self._titles[idx[window[w]]],
                         "timestamp": None if np.isnan(times[window[w]]) else float(times[window[w]]),
                         "position": int(pos[window[w]]), "weight": float(weights[w, c])} for w in order])
        return out

    # -- retrieval above the ANN threshold (models.retrieval) ---------------------------------------------
    def _queries(self, histories) -> tuple[np.ndarray, np.ndarray]:
        """(q [n, d], offset [n]) with the model's score of item i = q · v[i] + offset, v the item matrix.
        An AdaptiveBlend scores (1 - w) z(long) + w z(short), z standardising a row over every item: for
        dot-product scores z(q · v) = (q · v - q · mean) / sqrt(q C q), so its q and offset follow from
        the base's query vectors of the whole and of the last `short` events and the item matrix's moments."""
        if self._moments is None:
            queries = np.asarray(self._dot.query_vectors(histories), np.float32)
            return queries, np.zeros(len(histories))
        blend, (mean, cov) = self.model, self._moments
        w = np.asarray(blend.weights(histories), np.float64)
        short = [np.asarray(h, np.int64)[-blend.short:] for h in histories]
        queries, offset = np.zeros((len(histories), len(mean))), np.zeros(len(histories))
        for part, weight in ((histories, 1 - w), (short, w)):
            q = np.asarray(self._dot.query_vectors(part), np.float64)
            sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", q, cov, q), 0.0))
            a = weight / np.where(sd > 0, sd, 1.0)
            queries += a[:, None] * q
            offset -= a * (q @ mean)
        return queries.astype(np.float32), offset

    def _retrieve(self, idx, k: int, domain, excluded) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices of one history from the ANN index (domain items only, `excluded` raw ids
        never), with the model's scores."""
        if k < 1:
            raise ValueError(f"field 'k' must be >= 1, not {k}")
        queries, offset = self._queries([idx])
        banned = np.unique(np.asarray([self._index[i] for i in excluded if i in self._index], np.int64))
        allowed = None if domain is None else self._domain_items[domain]
        top, scores = retrieval.search(self._ann, queries, k, [banned], allowed, exact_below=self._dot.ann_threshold)
        found = np.isfinite(scores[0])
        return top[0][found], scores[0][found] + np.float32(offset[0])

    def _item_scores(self, histories, items) -> np.ndarray:
        """The model's scores of `items` only, [len(histories), len(items)]: from the query vectors above
        the ANN threshold (no full rows), else columns of score_histories."""
        if self._ann is None:
            return np.asarray(self.model.score_histories(histories), np.float32)[:, items]
        queries, offset = self._queries(histories)
        return queries @ self._ann.matrix[items].T + offset[:, None].astype(np.float32)

    def _cold_answer(self, k, domain, excluded, explain, popular) -> dict:
        if popular is None:
            return {"path": "cold", "reason": "no events and no popularity source: no items", "items": []}
        items = []
        for item, count in popular(domain, k, sorted(excluded)):
            if str(item) in excluded or len(items) >= k:
                continue
            i = self._index.get(str(item))
            entry = {ITEM: str(item), TITLE: None if i is None else self._titles[i],
                     DOMAIN: domain if i is None else self._domains[i], "score": float(count)}
            items.append({**entry, "because": []} if explain else entry)
        reason = "popular overall" if domain is None else f"popular in domain {domain}"
        return {"path": "cold", "reason": reason, "items": items}

    # -- interests --------------------------------------------------------------------------------
    def interests(self, history) -> dict:
        """Topic shares of all events (long) and of the newest `short_events` (short), detected
        migrations (position in `history`, ISO date, topics before/after, timeline period), the
        AdaptiveBlend weight, the timeline: topic shares per period of the history (`_timeline`), and
        `model_interests`: a multi-interest model's own interests (None for other models)."""
        pos, idx, times = self._events(history)
        out = {"long": [], "short": [], "migrations": [], "blend_weight": None, "events": int(len(idx)),
               "timeline": {"every": 1, "periods": [], "series": []}, "model_interests": None}
        if not len(idx):
            return out
        if self.topics is None:
            raise ValueError("this model version has no topic space (no categories, no text vectors)")
        rows, names = self.topics.one_hot(idx), list(self.topics.names)
        out["long"], out["short"] = _shares(rows, names), _shares(rows[-self.short_events:], names)
        out["timeline"] = _timeline(rows, names, times, self.timeline_topics, self.timeline_periods)
        if self.detector is not None and self.text_vectors is not None:
            for m in migrations(History("", idx, times), self.topics, self.text_vectors, self.detector):
                out["migrations"].append({
                    "position": int(pos[m.event]), "period": int(m.event) // out["timeline"]["every"],
                    "timestamp": None if m.date == "-" else m.date,
                    "before": [{"topic": t, "share": s} for t, s in m.before],
                    "after": [{"topic": t, "share": s} for t, s in m.after]})
        if isinstance(self.model, AdaptiveBlend):
            out["blend_weight"] = float(self.model.weights([idx[-self.max_history:]])[0])
        out["model_interests"] = self._model_interests(idx[-self.max_history:])
        return out

    def _model_interests(self, idx: np.ndarray) -> list[dict] | None:
        """A multi-interest model's own interests of the history (models.multi_interest.describe_interests:
        name, weight, topics, the history's items it explains, its top unseen items); None for other models."""
        describe = getattr(getattr(self.model, "base", self.model), "describe_interests", None)
        if describe is None:
            return None
        if self._names is None:                 # item_id, title [, category]: built once, then reused (read-only)
            names = pd.DataFrame({ITEM: self.model.item_ids_, TITLE: self._titles})
            if "category" in self.catalogue.columns:
                names["category"] = self.catalogue["category"].to_numpy()
            self._names = names
        found = describe([self.model.item_ids_[i] for i in idx], self._names)
        return [{"name": g["name"], "weight": g["weight"], "topics": [{"topic": t, "share": v} for t, v in g["topics"]],
                 "items": g["items"], "suggestions": g["suggestions"]} for g in found]

    # -- search -----------------------------------------------------------------------------------
    def search_items(self, text: str, limit: int = 20) -> list[dict]:
        """Items whose id starts with `text` or whose title contains it (case-insensitive): exact id
        first, then id prefixes, then titles, each in catalogue order; item_id, title, domain, cold."""
        text = str(text).strip().lower()
        if not text:
            return []
        if self._search is None:                # built on the first search, then reused (read-only)
            self._search = (pd.Series(self.model.item_ids_, dtype=object).str.lower(),
                            pd.Series(self._titles, dtype=object).astype(str).str.lower())
        ids, titles = self._search
        exact = np.flatnonzero(ids.to_numpy() == text)
        prefix = np.flatnonzero(ids.str.startswith(text, na=False).to_numpy())
        inside = np.flatnonzero(titles.str.contains(text, regex=False, na=False).to_numpy())
        order = list(dict.fromkeys(np.r_[exact, prefix, inside].astype(int).tolist()))[:limit]
        return [{ITEM: self.model.item_ids_[i], TITLE: self._titles[i], DOMAIN: self._domains[i],
                 "cold": bool(self._cold[i])} for i in order]
