"""One call from a data set to a transfer comparison: used by `migrec transfer` and the benchmark.

    results = run_transfer(dataset, targets=["kitchen", "food"], params=dict(...))
    for r in results: print(r.to_markdown())
    tasks, bank = transfer_setup(dataset, targets=["kitchen", "food"])   # the same, to run models yourself

Every target named shares one item universe, one training set and one ModelBank, so
models that two directions both need (a single-domain model is one direction's
target-only model and the other's pre-trained source; the joint model) train once.
"""
from __future__ import annotations

import logging

from ..data.schema import Dataset
from ..models.sasrec import SASRec
from .domains import TransferTask, make_task
from .regimes import ALL, ModelBank, TransferExperiment, TransferResult

log = logging.getLogger(__name__)

# Defaults sized for a 2-core CPU on tens of thousands of items (sampled softmax).
INTEREST = dict(hidden=64, layers=2, heads=2, max_len=50, dropout=0.3, lr=1e-3, batch_size=256, negatives=2048,
                epochs=100, patience=3, precision="auto", progress=False, max_train_seconds=600, use_id=True)
FINETUNE = dict(lr=5e-4)


def run_transfer(dataset: Dataset, targets: list[str], source: list[str] | None = None, models=ALL,
                 params: dict | None = None, sasrec_params: dict | None = None, finetune: dict | None = None,
                 encoder: str | None = "st", cache_dir=True, item_vectors=None, cold_item_share: float = 0.1,
                 sampled_negatives: int = 999, validate_on: list[str] | None = None, seed: int = 0,
                 emcdr_params: dict | None = None, save_dir=None, repeats: str = "exclude",
                 pretrain: dict | None = None, extra_valid: int = 0) -> list[TransferResult]:
    """Run the regimes for each target domain (source: every other domain unless given).

    repeats: the evaluator's history policy ("exclude" or "allow"; see migrec.evaluation.evaluator).
    validate_on: further domains whose held-out cases early-stop their single-domain
    models (e.g. "food", "kitchen" when only "scientific" is a target).
    save_dir: keep fitted models there; a later run with the same settings reuses them.
    pretrain: parameter overrides for the models pre-trained on the source (e.g. {"id_dropout": 0.5});
    the transfer regimes start from that model instead of the shared source-domain one.
    extra_valid: this many cross-domain training users give their last event to validation
    (make_task), so that models early-stop and mixes choose their weights on more cases.
    """
    tasks, bank = transfer_setup(dataset, targets, source=source, params=params, sasrec_params=sasrec_params,
                                 finetune=finetune, encoder=encoder, cache_dir=cache_dir, item_vectors=item_vectors,
                                 cold_item_share=cold_item_share, validate_on=validate_on, seed=seed,
                                 save_dir=save_dir, pretrain=pretrain, extra_valid=extra_valid)
    results = []
    for task in tasks:
        names = [m for m in models if m not in ("emcdr-mf", "transfer-mapping") or _has_overlap(task)]
        skipped = sorted(set(models) - set(names))
        if skipped:
            log.warning("%s: no overlapping training users, so no %s", task.name, skipped)
            task.notes["skipped"] = skipped
        results.append(TransferExperiment(task, bank, names, sampled_negatives=sampled_negatives,
                                          emcdr_params=emcdr_params, seed=seed, repeats=repeats).run())
    return results


def transfer_setup(dataset: Dataset, targets: list[str], source: list[str] | None = None, params: dict | None = None,
                   sasrec_params: dict | None = None, finetune: dict | None = None, encoder: str | None = "st",
                   cache_dir=True, item_vectors=None, cold_item_share: float = 0.1,
                   validate_on: list[str] | None = None, seed: int = 0, save_dir=None,
                   pretrain: dict | None = None, extra_valid: int = 0) -> tuple[list[TransferTask], ModelBank]:
    """The tasks (one per target, sharing one encoded training set) and the ModelBank that fits
    their models, without running anything: run_transfer's first half (arguments as there)."""
    tasks = [make_task(dataset, target=t, source=source, cold_item_share=cold_item_share, seed=seed,
                       extra_valid=extra_valid) for t in targets]
    extra = [make_task(dataset, target=d, cold_item_share=cold_item_share, seed=seed, extra_valid=extra_valid)
             for d in (validate_on or []) if d not in targets]
    train = tasks[0].train
    if item_vectors is None and encoder:
        from ..encoders import encode_catalogue, make_encoder
        made_by = make_encoder(encoder)
        item_vectors = encode_catalogue(train.catalogue, made_by, cache_dir=cache_dir)
        train.encoder = made_by.model_id
    train.item_vectors = item_vectors
    params = {**INTEREST, "seed": seed, **(params or {})}
    if params.get("text_layers"):         # the interest models fine-tune the sentence model's top layers
        from ..encoders import make_encoder
        from ..encoders.tuning import encode_lower_states
        if not encoder:
            raise ValueError("text_layers needs the sentence encoder (encoder=...) for the lower-layer states")
        train.item_states = encode_lower_states(train.catalogue, make_encoder(encoder), layers=params["text_layers"])
    for task in tasks[1:]:
        task.train = train        # identical by construction; one object keeps the bank's models valid
    shared = SASRec().get_params()        # the interest model's own settings (text, IDs) do not apply
    sasrec = {k: v for k, v in params.items() if k in shared}
    bank = ModelBank(train, params, {**sasrec, **(sasrec_params or {})}, {**FINETUNE, **(finetune or {})},
                     save_dir, pretrain)
    for task in tasks + extra:
        bank.add_valid(task)
    return tasks, bank


def _has_overlap(task) -> bool:
    src, tgt = task.source_mask, task.target_mask
    return sum(bool(src[s].any() and tgt[s].any()) for s in task.train.sequences) >= 10
