"""Transfer regimes on one model family, all measured against target-only on one task.

    bank = ModelBank(task.train, params)                # fitted models, shared between tasks
    result = TransferExperiment(task, bank).run()       # rows per regime and baseline
    print(result.to_markdown())

Regimes (the InterestModel with domain adapters throughout):
  target-only         trained on target-domain events; sees only the target history
  transfer-zero-shot  trained on the source domain(s) only; target items known by text
  transfer-zero-shot+text  that model mixed with text neighbours (below), the weight chosen on the
                      source domains' validation cases: still no target-domain data
  transfer-adapter    that model, then only its text adapters fine-tuned on the target users
  transfer-full       that model, then every weight fine-tuned on the target users
  transfer-joint      one model over all domains' mixed sequences
  transfer-mapping    target-only, except users with no target history: their source
                      interest vector is mapped to a target interest vector (EMCDR-style)
  transfer-mix        target-only's and the best other regime's scores mixed with a weight chosen
                      on validation (0 = target-only): never below target-only on validation (mix.py)
  transfer-mix+text   transfer-mix mixed in turn with text neighbours (models.text_knn: the newest
                      events' text similarity, no IDs, so items without events compete), the weight
                      again chosen on validation (0 = transfer-mix)
Baselines: popularity (target domain), text-knn (text neighbours of the newest events: no training,
the zero-shot floor a pre-trained model should clear), sasrec (ID-only, target-only), emcdr-mf.
A regime whose validation NDCG@10 is below target-only's is flagged as negative transfer, and
every regime's test NDCG@10 is compared with target-only's case by case: the mean difference
with a paired 95 % bootstrap interval (`paired_difference`; the test sets are small).
Every evaluation follows one history policy, `repeats` ("exclude" by default: every history
item masked, a repeated target a miss; "allow": nothing masked), named in each row and result.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from functools import cached_property
from pathlib import Path

import numpy as np

from ..evaluation import metrics as M
from ..evaluation.evaluator import check_repeats, evaluate
from ..evaluation.memory import PeakMemory
from ..models.base import Recommender
from ..models.interest import InterestModel
from ..models.popularity import Popularity
from ..models.sasrec import SASRec
from ..models.text_knn import TextNeighbours
from ..data.split import EvalSet
from .domains import (DomainView, TransferTask, item_domains, restrict, restrict_histories, same_universe,
                      users_with)
from .mapping import EMCDRMapping, pack_mapping, unpack_mapping
from .mix import ValidatedMix

log = logging.getLogger(__name__)
REGIMES = ["target-only", "transfer-zero-shot", "transfer-zero-shot+text", "transfer-adapter", "transfer-full",
           "transfer-joint", "transfer-mapping", "transfer-mix", "transfer-mix+text"]
MIXED = ("transfer-zero-shot", "transfer-adapter", "transfer-full", "transfer-joint")   # transfer-mix picks one
TEXT_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)   # text neighbours' share: small, finely
BOOTSTRAP = 2000
BASELINES = ["popularity", "text-knn", "sasrec", "emcdr-mf"]
ALL = BASELINES + REGIMES
KS = (1, 5, 10, 50)


class ModelBank:
    """Fits each needed model once per item universe; tasks that share the universe share models.

    Both directions of a domain pair share the single-domain models (one direction's
    source model is the other's target-only model) and the joint model.
    """

    def __init__(self, train, params: dict | None = None, sasrec_params: dict | None = None,
                 finetune: dict | None = None, save_dir=None, pretrain: dict | None = None):
        self.train, self.params = train, dict(params or {})
        # overrides for the models pre-trained on a task's source domains (e.g. id_dropout, so that
        # text-only rows carry the prediction); none: the source model is the shared single-domain one
        self.pretrain = dict(pretrain or {})
        self.save_dir = None if save_dir is None else Path(save_dir)   # fitted models kept here, reused
        self.sasrec_params = dict(sasrec_params or self.params)
        self.finetune = dict(finetune or {})   # overrides while fine-tuning (e.g. a lower lr)
        self.models, self.costs, self.valid = {}, {}, {}

    def add_valid(self, task: TransferTask) -> "ModelBank":
        """Register a task's validation cases: models of its target domain early-stop on them."""
        self.valid[task.target] = task.valid
        return self

    def valid_for(self, domains) -> EvalSet | None:
        """Registered validation cases of `domains`, histories cut to those domains (None if none)."""
        cases = _concat([self.valid[d] for d in sorted(domains) if d in self.valid])
        return None if cases is None else restrict_histories(cases, np.isin(item_domains(self.train), list(domains)))

    def _fit(self, key, make, train, valid):
        if valid is None and key not in self.models:
            log.warning("%s: no validation cases registered; trains for its epoch/time budget", key)
        return self._cached(key, lambda: make().fit(train, valid))

    def _cached(self, key, fit):
        """Fit once per key; with save_dir, a model fitted by an earlier run from the same settings
        and training data is loaded instead (a saved model whose settings.json differs is refitted)."""
        if key in self.models:
            return self.models[key]
        folder = None if self.save_dir is None else self.save_dir / _slug(key)
        settings = None if folder is None else self.settings(key)   # digests the data: only when saving
        if folder is not None and (folder / "cost.json").exists():
            saved = _read_json(folder / "settings.json")
            if saved == settings:
                self.models[key] = Recommender.load(folder)
                self.costs[key] = tuple(json.loads((folder / "cost.json").read_text()))
                log.info("loaded %s from %s", key, folder)
                return self.models[key]
            if saved is None:
                log.warning("%s in %s has no readable settings.json: fitting it again", key, folder)
            else:
                differ = sorted(k for k in settings if saved.get(k) != settings[k])
                log.warning("%s in %s was fitted from other settings (%s): fitting it again", key, folder,
                            "; ".join(_differences(saved, settings, differ)))
            shutil.rmtree(folder)
        model, seconds, peak = _timed(fit)
        self.models[key], self.costs[key] = model, (seconds, peak)
        log.info("fitted %s in %.0f s", key, seconds)
        if folder is not None:
            model.save(folder)
            (folder / "cost.json").write_text(json.dumps(self.costs[key]))
            (folder / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True))
        return model

    def settings(self, key) -> dict:
        """What the model of `key` is fitted from: the bank's parameters (and fine-tuning overrides
        for a fine-tuned model; pre-training overrides are part of the key) and a digest of the
        training data and item vectors. Saved beside the model; a reuse must match it."""
        out = {"params": self.params, "data": self.data_digest}
        if key[0] == "fine-tune":
            out["finetune"] = self.finetune
        return json.loads(json.dumps(out, sort_keys=True, default=str))

    @cached_property
    def data_digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the training items, users, sequences, encoder and item vectors."""
        train, digest = self.train, hashlib.sha256()
        for ids in (train.item_ids, train.user_ids):
            digest.update("\x1f".join(map(str, ids)).encode())
        lengths = np.fromiter((len(s) for s in train.sequences), dtype=np.int64, count=len(train.sequences))
        digest.update(lengths.tobytes())
        if len(train.sequences):
            digest.update(np.concatenate(train.sequences).astype(np.int64).tobytes())
        digest.update(str(getattr(train, "encoder", None)).encode())
        vectors = getattr(train, "item_vectors", None)
        if vectors is not None:
            digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]

    def interest(self, domains) -> InterestModel:
        """Interest model trained on the events of `domains` only."""
        return self._on_domains(("interest", tuple(sorted(domains))), {})

    def _on_domains(self, key: tuple, overrides: dict) -> InterestModel:
        """The model of `key` (key[1]: its domains) fitted on those domains' events, `overrides` on the params."""
        keep = np.isin(item_domains(self.train), key[1])
        return self._fit(key, lambda: InterestModel(**{"domain_adapters": True, **self.params, **overrides}),
                         restrict(self.train, keep), self.valid_for(key[1]))

    def pretrained_key(self, domains) -> tuple:
        domains = tuple(sorted(domains))
        if not self.pretrain:
            return ("interest", domains)
        return ("pretrain", domains, ",".join(f"{k}={v}" for k, v in sorted(self.pretrain.items())))

    def pretrained(self, domains) -> InterestModel:
        """The model pre-trained on `domains` that transfer regimes start from: `interest(domains)`
        itself, or with `pretrain` overrides a model of its own."""
        return self._on_domains(self.pretrained_key(domains), self.pretrain)

    def fine_tune_key(self, task: TransferTask, trainable: str) -> tuple:
        return ("fine-tune", *self.pretrained_key(task.source)[1:], task.target, trainable)

    def joint(self) -> InterestModel:
        """One model over every domain's (mixed) sequences."""
        return self._fit(("joint",), lambda: InterestModel(domain_adapters=True, **self.params),
                         self.train, _concat(list(self.valid.values())))

    def fine_tuned(self, task: TransferTask, trainable: str) -> InterestModel:
        key = self.fine_tune_key(task, trainable)
        pretrained = self.pretrained(task.source)

        def fit():
            model = pretrained.clone().set_params(**self.finetune)
            return model.fine_tune(users_with(self.train, task.target_mask), task.valid, trainable=trainable)
        return self._cached(key, fit)

    def cost(self, *keys) -> tuple:
        seconds = sum(self.costs[k][0] for k in keys if k in self.costs)
        peak = max((self.costs[k][1] for k in keys if k in self.costs), default=float("nan"))
        return seconds, peak


class MappedUsers(Recommender):
    """Target-only model for users with target history; mapped source interest for the others.

    Both interest models are hyper-parameters (nested folders when saved), the masks
    arrays; the item universe is the target model's.
    """

    name = "transfer-mapping"
    registry = "mapped-users"
    _state_apart = ("map_",)     # saved by _state/_restore below

    def __init__(self, source_model, target_model, source_mask, target_mask, mapping="mlp", seed: int = 0):
        self.source_model, self.target_model = source_model, target_model
        self.source_mask, self.target_mask = source_mask, target_mask
        self.mapping, self.seed = mapping, seed

    @property
    def item_ids_(self) -> np.ndarray:
        return self.target_model.item_ids_

    def _set_items(self, item_ids) -> None:
        same_universe(self.target_model, item_ids, "the target model")

    def encoder_info(self) -> dict | None:
        return self.target_model.encoder_info()

    def fit(self, train, valid=None):
        """Learn the mapping on training users with events in both domains (overlapping users)."""
        self._summarise(train)      # refuses data over another catalogue than the target model's
        src = [s[self.source_mask[s]] for s in train.sequences]
        tgt = [s[self.target_mask[s]] for s in train.sequences]
        both = [i for i in range(len(src)) if len(src[i]) and len(tgt[i])]
        if len(both) < 10:
            raise ValueError(f"only {len(both)} overlapping training users: too few to learn a mapping")
        self.n_overlap_ = len(both)
        s_vec = self.source_model.interest_vectors([src[i] for i in both])
        t_vec = self.target_model.interest_vectors([tgt[i] for i in both])
        self.map_ = EMCDRMapping(kind=self.mapping, seed=self.seed).fit(s_vec, t_vec)
        return self

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if "map_" not in self.__dict__:
            raise RuntimeError("MappedUsers is not fitted: call fit() first")

    def score_histories(self, histories):
        self._check_fitted()
        hs = [np.asarray(h, dtype=np.int64) for h in histories]
        tgt = [h[self.target_mask[h]] for h in hs]
        scores = np.array(self.target_model.score_histories(tgt), dtype=np.float32, copy=True)
        cold = [i for i, t in enumerate(tgt) if len(t) == 0]
        src = [hs[i][self.source_mask[hs[i]]] for i in cold]
        cold = [i for i, s in zip(cold, src) if len(s)]
        if cold:
            mapped = self.map_.predict(self.source_model.interest_vectors([s for s in src if len(s)]))
            scores[cold] = self.target_model.score_interests(mapped)
        return scores

    # -- persistence: the models are nested folders (base class), the mapping is numbers ------------
    def _state(self):
        state, arrays, children = super()._state()
        pack_mapping(self.map_, "map_", state, arrays)
        return state, arrays, children

    def _restore(self, state, arrays, children):
        state = dict(state)
        mapping = unpack_mapping("map_", state, arrays)
        super()._restore(state, arrays, children)
        self.map_ = mapping


class TransferResult:
    def __init__(self, task: TransferTask, rows: list, repeats: str = "exclude"):
        self.task, self.rows, self.repeats = task, rows, check_repeats(repeats)

    def to_markdown(self, columns=("NDCG@10", "HR@10", "sampled:NDCG@10", "sampled:HR@10", "cold-users:NDCG@10",
                                   "cold-items:HR@10", "valid:NDCG@10")) -> str:
        head = ["model", *columns, "vs target-only", "test NDCG@10 - target-only [95 % CI]", "train s"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for r in self.rows:
            m = r["metrics"]
            diff = m.get("vs-target-only:NDCG@10")
            paired = "" if diff is None else \
                f"{diff:+.4f} [{m['vs-target-only:NDCG@10:lo95']:+.4f}, {m['vs-target-only:NDCG@10:hi95']:+.4f}]"
            cells = [r["model"], *(f"{m[c]:.4f}" if m.get(c) is not None else "n/a" for c in columns),
                     r.get("versus_target_only", ""), paired, f"{r['train_seconds']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    @property
    def negative_transfer(self) -> list[str]:
        return [r["model"] for r in self.rows if r.get("negative_transfer")]


class TransferExperiment:
    """Fit the regimes and baselines a task needs, evaluate all on the same cases."""

    def __init__(self, task: TransferTask, bank: ModelBank, models=ALL, sampled_negatives: int = 999,
                 emcdr_params: dict | None = None, seed: int = 0, repeats: str = "exclude"):
        unknown = sorted(set(models) - set(ALL))
        if unknown:
            raise ValueError(f"unknown regimes/baselines {unknown}; choose from {ALL}")
        self.task, self.bank, self.models = task, bank, list(models)
        self.repeats = check_repeats(repeats)    # the evaluator's history policy, for every evaluation here
        self.sampled_negatives, self.emcdr_params, self.seed = sampled_negatives, dict(emcdr_params or {}), seed

    def build(self, name: str):
        """(scorer, train seconds, peak MB) of one regime or baseline."""
        task, bank = self.task, self.bank
        src, tgt = tuple(sorted(task.source)), (task.target,)
        if name == "popularity":
            return _timed(lambda: Popularity().fit(bank.train))
        if name == "text-knn":
            return _timed(lambda: TextNeighbours().fit(bank.train))
        if name == "sasrec":
            return _timed(lambda: DomainView(SASRec(**bank.sasrec_params), task.target_mask, "sasrec")
                          .fit(bank.train, task.valid))
        if name == "emcdr-mf":
            from .emcdr import EMCDRMF
            return _timed(lambda: EMCDRMF(source_domain=task.source[0] if len(task.source) == 1 else task.source,
                                          target_domain=task.target, **self.emcdr_params).fit(bank.train))
        if name == "target-only":
            return DomainView(bank.interest(tgt), task.target_mask, name), *bank.cost(("interest", tgt))
        if name == "transfer-zero-shot":
            return bank.pretrained(src), *bank.cost(bank.pretrained_key(src))
        if name == "transfer-zero-shot+text":
            return self._zero_shot_text()
        if name in ("transfer-adapter", "transfer-full"):
            trainable = "adapter" if name == "transfer-adapter" else "all"
            model = bank.fine_tuned(task, trainable)
            seconds, peak = bank.cost(bank.pretrained_key(src), bank.fine_tune_key(task, trainable))
            return model, seconds, peak
        if name == "transfer-joint":
            return bank.joint(), *bank.cost(("joint",))
        if name == "transfer-mapping":
            source, target = bank.interest(src), bank.interest(tgt)
            scorer, seconds, peak = _timed(lambda: MappedUsers(source, target, task.source_mask, task.target_mask,
                                                               seed=self.seed).fit(bank.train))
            s2, p2 = bank.cost(("interest", src), ("interest", tgt))
            return scorer, seconds + s2, max(peak, p2)
        if name == "transfer-mix":
            return self._mix
        if name == "transfer-mix+text":
            mix, s1, p1 = self._mix
            text = TextNeighbours().fit(bank.train)
            blend, s2, p2 = _timed(lambda: ValidatedMix(mix, text, candidates=task.candidates, grid=TEXT_GRID,
                                                        repeats=self.repeats).fit(bank.train, task.valid))
            blend.mixed_with_ = f"text-knn over transfer-mix ({mix.mixed_with_} at {mix.weight_})"
            return blend, s1 + s2, max(p1, p2)
        raise ValueError(name)

    def _zero_shot_text(self):
        """The pre-trained model mixed with text neighbours, the weight chosen on the source domains'
        validation cases (ranking among the source items): no target-domain event or case is used."""
        task, bank = self.task, self.bank
        valid = bank.valid_for(task.source)
        if valid is None or len(valid) == 0:
            raise ValueError("transfer-zero-shot+text chooses its weight on the source domains' validation cases: "
                             f"register them (validate_on={sorted(task.source)} in run_transfer)")
        pre, s1, p1 = self.build("transfer-zero-shot")
        text = TextNeighbours().fit(bank.train)
        # On the source the model knows every item's ID and domain parts, which a new domain's items
        # lack; so the weight is chosen with the source scored as a new domain (shared adapter alone)
        probe = pre.clone().set_params(as_new_domain=True) if isinstance(pre, InterestModel) else pre
        mix, s2, p2 = _timed(lambda: ValidatedMix(probe, text, candidates=np.flatnonzero(task.source_mask),
                                                  repeats=self.repeats).fit(bank.train, valid))
        mix.set_params(base=pre, candidates=task.candidates)   # the weight stays; the target's items are ranked
        mix.mixed_with_ = (f"text-knn over transfer-zero-shot (weight chosen on {'+'.join(sorted(task.source))}, "
                           "scored as a new domain)")
        return mix, s1 + s2, max(p1, p2)

    @cached_property
    def _mix(self):
        """target-only mixed with the regime (of MIXED, among those this experiment runs, else all)
        whose own validation NDCG@10 is best; the weight chosen on validation. Built once:
        transfer-mix+text mixes text neighbours into the same one."""
        task = self.task
        names = [n for n in MIXED if n in self.models] or list(MIXED)
        kw = dict(candidates=task.candidates, beyond=False, segments=False, repeats=self.repeats)
        valid = {n: evaluate(self.build(n)[0], task.valid, self.bank.train, ks=(10,), **kw).metrics["NDCG@10"]
                 for n in names}
        other = max(names, key=lambda n: valid[n])
        base, s1, p1 = self.build("target-only")
        model, s2, p2 = self.build(other)
        mix, s3, p3 = _timed(lambda: ValidatedMix(base, model, candidates=task.candidates, repeats=self.repeats)
                             .fit(self.bank.train, task.valid))
        mix.mixed_with_ = other
        return mix, s1 + s2 + s3, max(p1, p2, p3)

    def evaluate(self, scorer) -> dict:
        task, train = self.task, self.bank.train
        kw = dict(candidates=task.candidates, beyond=False, segments=False, repeats=self.repeats)
        test = evaluate(scorer, task.test, train, ks=KS + (1000,), sampled_negatives=self.sampled_negatives,
                        seed=self.seed, **kw)
        metrics = {k: v for k, v in test.metrics.items() if not k.endswith("@1000")}
        metrics["sampled:MRR"] = test.metrics.get("sampled:MRR@1000")   # the whole 1000-item list
        metrics["valid:NDCG@10"] = evaluate(scorer, task.valid, train, ks=(10,), **kw).metrics["NDCG@10"]
        ranks = test.per_user["ranks"]
        metrics["test:per-case-NDCG@10"] = M.accuracy_per_user(ranks, 10)["NDCG"]
        segments = {"cold-items": task.cold_item_cases(), "warm-items": ~task.cold_item_cases()}
        events = task.target_events()
        segments.update({"target-events:1-3": (events >= 1) & (events <= 3), "target-events:4+": events >= 4})
        for label, sel in segments.items():
            metrics[f"{label}:n"] = int(sel.sum())
            if sel.any():
                metrics.update({f"{label}:{k}": v for k, v in M.accuracy_metrics(ranks[sel], (10, 50)).items()})
        if len(task.source) and any(task.source_mask[h].any() for h in task.test.histories):
            cold = evaluate(scorer, task.cold_users(), train, ks=(10, 50), sampled_negatives=self.sampled_negatives,
                            seed=self.seed, **kw)
            metrics["cold-users:n"] = len(task.test)
            metrics.update({f"cold-users:{k}": v for k, v in cold.metrics.items()})
        return metrics

    def run(self) -> TransferResult:
        rows = []
        for name in self.models:
            log.info("%s: %s", self.task.name, name)
            scorer, seconds, peak = self.build(name)
            row = {"model": name, "metrics": self.evaluate(scorer), "train_seconds": seconds,
                   "peak_rss_mb": peak, "repeats": self.repeats}
            if isinstance(scorer, ValidatedMix):
                row.update(mix_weight=scorer.weight_, mixed_with=scorer.mixed_with_)
            rows.append(row)
        base = next((r["metrics"]["test:per-case-NDCG@10"] for r in rows if r["model"] == "target-only"), None)
        for r in rows:
            case = r["metrics"].pop("test:per-case-NDCG@10")
            if base is not None and r["model"] != "target-only":
                diff, lo, hi = paired_difference(case, base, reps=BOOTSTRAP, seed=self.seed)
                r["metrics"].update({"vs-target-only:NDCG@10": diff, "vs-target-only:NDCG@10:lo95": lo,
                                     "vs-target-only:NDCG@10:hi95": hi})
        return TransferResult(self.task, flag_negative_transfer(rows), repeats=self.repeats)


def flag_negative_transfer(rows: list, key: str = "valid:NDCG@10") -> list:
    """Mark each transfer row against target-only on validation NDCG@10 (the test set stays unseen)."""
    base = next((r for r in rows if r["model"] == "target-only"), None)
    if base is None:
        return rows
    ref = base["metrics"][key]
    for r in rows:
        if r["model"].startswith("transfer-"):
            v = r["metrics"][key]
            r["negative_transfer"] = bool(v < ref)
            change = f"{v / ref - 1:+.1%} valid" if ref > 0 else "n/a"
            r["versus_target_only"] = change + (" NEGATIVE TRANSFER" if v < ref else "")
    return rows


def paired_difference(a, b, reps: int = BOOTSTRAP, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a - b over paired cases and its percentile bootstrap interval (cases resampled with
    replacement, `reps` times, seeded): (difference, low, high)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired_difference needs two equal-length non-empty 1-d arrays; got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, len(d), (min(256, reps - lo), len(d)))].mean(axis=1)
                            for lo in range(0, reps, 256)])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(lo), float(hi)


def _concat(parts: list) -> EvalSet | None:
    """One EvalSet holding every part's cases (None when there are none)."""
    if not parts:
        return None
    return EvalSet(np.concatenate([p.users for p in parts]), sum((p.histories for p in parts), []),
                   sum((p.targets for p in parts), []))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _differences(saved: dict, now: dict, keys: list) -> list[str]:
    """'params: lr 0.001 -> 0.0005' for dictionaries, else the key's name."""
    out = []
    for key in keys:
        old, new = saved.get(key), now[key]
        if isinstance(old, dict) and isinstance(new, dict):
            names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            out.append(f"{key}: " + ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in names))
        else:
            out.append(key)
    return out


def _slug(key: tuple) -> str:
    """("fine-tune", ("food",), "kitchen", "all") -> "fine-tune_food_kitchen_all"."""
    parts = [p if isinstance(p, str) else "+".join(p) for p in key]
    return "_".join(parts)


def _timed(make):
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        model = make()
        seconds = time.perf_counter() - t0
    return model, seconds, mem.peak_mb
