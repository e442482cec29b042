"""Distributed data-parallel training (models.distributed, models.training) and streamed windows.

Two processes with gloo on this machine against one process, same seed and global batch,
on the cycle data of test_models (dropout 0, so both trajectories are deterministic):
per-epoch losses agree to rtol 1e-4 and the saved models' scores to atol 1e-4. Measured
here: the largest relative loss difference is ~1e-7 and the largest score difference ~1e-5
(float summation order: the gradients are all-reduced, the shards summed apart).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from migrec.cli import main
from migrec.data import Histories
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.models import distributed
from migrec.models.interest import InterestModel
from migrec.models.sasrec import SASRec
from migrec.models.training import WindowIndex, training_windows
from test_models import N_ITEMS, N_USERS, SMALL, cycle_split, raw_histories

LOSS_RTOL, SCORE_ATOL = 1e-4, 1e-4
BASE = {**SMALL, "dropout": 0.0}
# full softmax with early stopping (patience 2: the cycle is learnt by epoch ~7, then it stops);
# sampled softmax with a global batch of 43 over 44 windows: shards of 22 and 21 windows of
# unequal target counts, then a batch of one window, which leaves rank 1 an empty shard.
CASES = {
    "sasrec": (SASRec, dict(BASE, epochs=15, patience=2)),
    "interest-sampled": (InterestModel, dict(BASE, use_id=True, experts=2, adapter_dropout=0.0, epochs=6,
                                             patience=10, negatives=8, batch_size=43)),
}
UPDATE = dict(epochs=2, replay=1.0)
CLI_PARAMS = {"hidden": 16, "layers": 1, "heads": 1, "max_len": 20, "batch_size": 8, "dropout": 0, "lr": 0.01,
              "progress": "false"}


def cli_train(data: str, out: str, nproc: int | None = None, epochs: int = 4) -> list:
    """`migrec train` arguments: SASRec on the cycle data written as Parquet."""
    argv = ["train", "--dataset", "parquet", "--path", data, "--model", "sasrec", "--device", "cpu",
            "--epochs", str(epochs), "--out", out]
    argv += [a for k, v in CLI_PARAMS.items() for a in ("--param", f"sasrec.{k}={v}")]
    return argv + ([] if nproc is None else ["--nproc", str(nproc)])


def update_data(split):
    """New events for partial_fit: five users continue their cycle by two items; their histories before."""
    users, items = [], []
    for u in range(5):
        last = int(split.train.item_ids[split.train.sequences[u][-1]][1:])
        for step in (1, 2):
            users.append(split.train.user_ids[u])
            items.append(f"i{(last + step) % 40:02d}")
    events = pd.DataFrame({"user_id": users, "item_id": items})
    before = Histories.from_sequences(split.train.user_ids, split.train.item_ids, split.train.sequences)
    return events, before


def train_all(split, events, before) -> dict:
    """Every case fitted, then (sasrec) a partial_fit clone; the same calls on every rank."""
    models = {}
    for name, (cls, params) in CASES.items():
        models[name] = cls(**params).fit(split.train, split.valid)
    models["sasrec-update"] = models["sasrec"].clone().partial_fit(events, histories=before, **UPDATE)
    return models


def _rank_worker(split, events, before, out: str, data: str) -> None:
    rank, _ = distributed.world()
    for name, model in train_all(split, events, before).items():
        model.save(f"{out}/rank{rank}/{name}")   # rank 1 too: to check every rank ends with rank 0's weights
    main(cli_train(data, f"{out}/cli"))          # as under torchrun: the command joins the running group


@pytest.fixture(scope="module")
def cycle_data(tmp_path_factory):
    """The cycle data set as a Parquet folder (for `migrec train --dataset parquet`)."""
    rng = np.random.default_rng(0)     # the rule of test_models.cycle_split: always the next item of a ring
    users, items, times = [], [], []
    for u in range(N_USERS):
        start = rng.integers(N_ITEMS)
        for t in range(rng.integers(8, 29)):
            users.append(f"u{u:02d}")
            items.append(f"i{(start + t) % N_ITEMS:02d}")
            times.append(float(t))
    catalogue = make_catalogue([f"i{j:02d}" for j in range(N_ITEMS)], [f"item {j}" for j in range(N_ITEMS)])
    folder = tmp_path_factory.mktemp("cycle") / "data"
    Dataset(make_interactions(users, items, timestamp=times), catalogue, "cycle").to_parquet(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cycle_data):
    """(one-process models, {rank: two-process models loaded from their folders}, split, folders).

    The one-process runs: the models in this process, and `migrec train` (in-process) into
    folders["cli-1"]; the two-process runs: one spawn for all, `migrec train` included (folders["cli-2"]).
    """
    split = cycle_split()
    events, before = update_data(split)
    out = tmp_path_factory.mktemp("ddp")
    before_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train_all(split, events, before)
        main(cli_train(cycle_data, str(out / "cli-1")))
    finally:
        torch.set_num_threads(before_threads)
    distributed.spawn(_rank_worker, 2, split, events, before, str(out), cycle_data, threads=1, device="cpu")
    two = {rank: {name: cls.load(out / f"rank{rank}" / name)
                  for name, cls in [("sasrec", SASRec), ("interest-sampled", InterestModel),
                                    ("sasrec-update", SASRec)]}
           for rank in (0, 1)}
    return one, two, split, {"cli-1": out / "cli-1", "cli-2": out / "cli"}


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_follow_the_one_process_loss_trajectory(runs, name):
    one, two, *_ = runs
    a = np.array([r["loss"] for r in one[name].history_])
    b = np.array([r["loss"] for r in two[0][name].history_])
    assert len(a) == len(b)      # the same early-stopping decision
    np.testing.assert_allclose(b, a, rtol=LOSS_RTOL)
    assert a[-1] < 0.5 * a[0]    # it learnt something
    va = [r.get("valid_NDCG@10") for r in one[name].history_]
    vb = [r.get("valid_NDCG@10") for r in two[0][name].history_]
    np.testing.assert_allclose(vb, va, atol=1e-6)
    # rank 1 knows the scores rank 0 computed, and stopped at the same epoch
    assert [r.get("valid_NDCG@10") for r in two[1][name].history_] == vb


def test_early_stopping_decided_on_rank_0_stops_every_rank(runs):
    one, two, *_ = runs
    epochs = len(one["sasrec"].history_)
    assert epochs < CASES["sasrec"][1]["epochs"]          # it did stop early
    assert len(two[0]["sasrec"].history_) == len(two[1]["sasrec"].history_) == epochs
    assert two[0]["sasrec"].best_valid_ndcg_ == pytest.approx(one["sasrec"].best_valid_ndcg_, abs=1e-6)


@pytest.mark.parametrize("name", [*CASES, "sasrec-update"])
def test_saved_models_score_alike(runs, name):
    one, two, split, _ = runs
    histories = raw_histories(split)
    items = list(one[name].item_ids_)
    expected = one[name].score(histories, items)
    np.testing.assert_allclose(two[0][name].score(histories, items), expected, atol=SCORE_ATOL)
    # every rank ends with rank 0's (best) weights
    np.testing.assert_array_equal(two[1][name].score(histories, items), two[0][name].score(histories, items))


def test_partial_fit_in_two_processes_matches_one(runs):
    one, two, *_ = runs
    a, b = one["sasrec-update"].partial_history_[-1], two[0]["sasrec-update"].partial_history_[-1]
    assert (a["new_windows"], a["replay_windows"]) == (b["new_windows"], b["replay_windows"]) == (5, 5)
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=LOSS_RTOL)


# -- streamed windows ----------------------------------------------------------------------------
@pytest.mark.parametrize("max_len", [1, 2, 3, 5, 20])
def test_window_index_yields_exactly_the_windows_training_windows_made(max_len):
    rng = np.random.default_rng(max_len)
    sequences = [rng.integers(0, 50, size=n) for n in [0, 1, 2, 3, 7, 21, 22, 23, 45, 60, 1, 4]]
    index = WindowIndex(sequences, max_len)
    expected = training_windows(sequences, max_len)
    assert len(index) == len(expected)
    np.testing.assert_array_equal(index.cut(np.arange(len(index)), width=max_len + 1), expected)
    np.testing.assert_array_equal(index.lengths(), (expected > 0).sum(1))
    rows = rng.permutation(len(index))[:7]          # any subset, trimmed to its longest window
    got = index.cut(rows)
    np.testing.assert_array_equal(got, expected[rows][:, : (expected[rows] > 0).sum(1).max()])
    assert index.seq.itemsize + index.end.itemsize == 8   # two int32 numbers per window


def test_window_index_on_the_cycle_data_and_no_window_case():
    split = cycle_split()
    index = WindowIndex(split.train.sequences, 20)
    np.testing.assert_array_equal(index.cut(np.arange(len(index)), width=21),
                                  training_windows(split.train.sequences, 20))
    assert len(index) == 44      # 36 short users one window each, 4 long users (>21 events) two each
    assert len(WindowIndex([np.array([3]), np.array([], dtype=np.int64)], 5)) == 0
    with pytest.raises(ValueError, match="max_len"):
        WindowIndex([np.arange(4)], 0)


# -- the command line ----------------------------------------------------------------------------
def assert_same_training(one_dir, two_dir, split):
    one, two = SASRec.load(one_dir), SASRec.load(two_dir)
    a = [r["loss"] for r in one.history_]
    np.testing.assert_allclose([r["loss"] for r in two.history_], a, rtol=LOSS_RTOL)
    histories, items = raw_histories(split), list(one.item_ids_)
    np.testing.assert_allclose(two.score(histories, items), one.score(histories, items), atol=SCORE_ATOL)
    return a


def test_train_command_in_a_process_group_trains_like_one_process(runs):
    *_, split, folders = runs
    losses = assert_same_training(folders["cli-1"], folders["cli-2"], split)
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert {p.name for p in folders["cli-2"].iterdir()} >= {"manifest.json", "catalogue.parquet", "data.json"}


def test_train_nproc_runs_torchrun_and_rank_0_saves(runs, cycle_data, tmp_path):
    *_, split, folders = runs
    out = tmp_path / "model"
    done = subprocess.run([sys.executable, "-m", "migrec", *cli_train(cycle_data, str(out), nproc=2)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved to") == 1 and "on 2 processes" in done.stdout
    assert_same_training(folders["cli-1"], out, split)


def test_nproc_errors_name_what_is_wrong(cycle_data, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="sequential models"):
        main(["train", "--dataset", "parquet", "--path", cycle_data, "--model", "popularity", "--nproc", "2",
              "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--nproc must be >= 1"):
        main(cli_train(cycle_data, str(tmp_path / "x"), nproc=0))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="already launched by torchrun"):
        main(cli_train(cycle_data, str(tmp_path / "x"), nproc=2))
