"""Experiment runner, report files and memory measurement on a tiny synthetic split."""
import json
import mmap
import time

import numpy as np
import pandas as pd
import pytest

from migrec.data.split import EvalSet, Split, TrainSet
from migrec.evaluation import Experiment, PeakMemory, evaluate, machine_description
from migrec.evaluation.evaluator import repeats_note
from migrec.models.base import Recommender


class Popular(Recommender):
    name = "pop"

    def fit(self, train, valid=None):
        self.counts_ = train.item_counts().astype(np.float32)
        return self

    def score_histories(self, histories):
        return np.tile(self.counts_, (len(histories), 1))


class Noise(Recommender):
    name = "noise"

    def __init__(self, seed=0):
        self.seed = seed

    def fit(self, train, valid=None):
        self.n_items_ = train.n_items
        return self

    def score_histories(self, histories):
        rows = []
        for h in histories:     # the history decides the row
            rng = np.random.default_rng([self.seed, len(h), *np.asarray(h, dtype=np.int64).tolist()])
            rows.append(rng.random(self.n_items_).astype(np.float32))
        return np.stack(rows) if rows else np.zeros((0, self.n_items_), np.float32)


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    p = np.linspace(3, 0.1, n_items)
    p /= p.sum()                                        # skewed popularity, so "pop" beats noise
    seqs = [rng.choice(n_items, size=8, replace=False, p=p) for _ in range(n_users)]
    cat = pd.DataFrame({"item_id": [f"i{j}" for j in range(n_items)], "domain": "default",
                        "title": [f"item {j}" for j in range(n_items)]})
    train = TrainSet(np.array([f"u{u}" for u in range(n_users)], dtype=object), cat["item_id"].to_numpy(object),
                     [s[:-2] for s in seqs], cat, item_vectors=rng.normal(size=(n_items, 4)))
    users = np.arange(n_users)
    valid = EvalSet(users, [s[:-2] for s in seqs], [s[-2:-1] for s in seqs])
    test = EvalSet(users, [s[:-1] for s in seqs], [s[-1:] for s in seqs])
    return Split(train, valid, test, name="toy", protocol="leave-one-out")


def test_experiment_reports(split, tmp_path, capsys):
    result = Experiment(split, [Popular(), Noise()], ks=(5, 10), sampled_negatives=10).run()
    out = capsys.readouterr().out
    assert "[1/2] fitting pop ... " in out and "[2/2] evaluating noise" in out

    assert [r["model"] for r in result.rows] == ["pop", "noise"]
    for r in result.rows:
        assert {"model", "metrics", "segments", "train_seconds", "eval_seconds", "peak_rss_mb"} <= set(r)
        assert r["peak_rss_mb"] > 0 and r["train_seconds"] >= 0
        assert "sampled:NDCG@10" in r["metrics"] and 0 <= r["metrics"]["NDCG@10"] <= 1
    assert result.rows[0]["metrics"]["coverage@5"] < result.rows[1]["metrics"]["coverage@5"]

    md = result.to_markdown()
    lines = md.splitlines()
    assert lines[0].startswith("| model | NDCG@10 | HR@10 | MRR@10 | coverage@10 | diversity@10 | novelty@10 |")
    assert len(lines) == 2 + 2 and lines[2].startswith("| pop |") and lines[3].startswith("| noise |")
    assert f"{result.rows[0]['metrics']['NDCG@10']:.4f}" in lines[2]

    doc = result.to_json(tmp_path / "r.json", command="pytest")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded == doc
    assert list(loaded) == ["dataset", "protocol", "repeats", "machine", "command", "rows"]
    assert loaded["dataset"] == "toy" and loaded["command"] == "pytest" and loaded["repeats"] == "exclude"
    assert loaded["protocol"] == "leave-one-out; " + repeats_note("exclude")
    assert "CPU cores" in loaded["machine"]
    for row in loaded["rows"]:
        assert {"model", "metrics", "train_seconds", "peak_rss_mb"} <= set(row) and row["repeats"] == "exclude"
        assert isinstance(row["metrics"]["NDCG@10"], float)

    for png in (result.plot(tmp_path / "bars.png"), result.plot_segments(tmp_path / "seg.png")):
        data = png.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_dict_eval_on_valid_and_nan_in_json(split, tmp_path):
    split.train.item_vectors = None                  # no vectors -> diversity NaN -> null / "n/a"
    result = Experiment(split, {"a": Popular(), "b": Popular()}, ks=(10,), eval_on="valid", progress=False).run()
    assert [r["model"] for r in result.rows] == ["a", "b"]
    assert result.rows[0]["n_users"] == len(split.valid)
    doc = result.to_json(tmp_path / "r.json")
    assert doc["rows"][0]["metrics"]["diversity@10"] is None
    assert "n/a" in result.to_markdown()
    with pytest.raises(ValueError):
        Experiment(split, [Popular()], eval_on="train")


def test_repeats_policy_runs_and_is_recorded(split, tmp_path):
    # user 0's test target is made a repeat of its first history item
    split.test.targets[0] = split.test.histories[0][:1].copy()
    runs = {}
    for repeats in ("exclude", "allow"):
        result = Experiment(split, [Popular()], ks=(10,), progress=False, repeats=repeats).run()
        runs[repeats] = result.rows[0]["metrics"]
        assert result.repeats == repeats and result.rows[0]["repeats"] == repeats
        want = evaluate(Popular().fit(split.train), split.test, split.train, ks=(10,), repeats=repeats)
        assert result.rows[0]["metrics"] == want.metrics          # the policy reached the evaluator
        doc = result.to_json(tmp_path / f"{repeats}.json", protocol="custom text")
        assert doc["repeats"] == repeats and doc["protocol"] == "custom text; " + repeats_note(repeats)
    assert runs["exclude"]["NDCG@10"] != runs["allow"]["NDCG@10"]
    with pytest.raises(ValueError, match="repeats"):
        Experiment(split, [Popular()], repeats="targets")


def test_duplicate_model_names_are_made_unique(split):
    result = Experiment(split, [Popular(), Popular()], ks=(10,), progress=False).run()
    assert [r["model"] for r in result.rows] == ["pop", "pop#2"]


def test_peak_memory_sees_a_temporary_allocation():
    # An anonymous mmap, not np.ones: in a process that has already trained models, malloc can
    # hand back freed memory that is still resident, and RSS would not move (CI saw +0.004 MB).
    with PeakMemory() as pm:
        block = mmap.mmap(-1, 200 * 2 ** 20)      # 200 MB of pages new to the process
        np.frombuffer(block, dtype=np.uint8)[:] = 1  # touched, so resident
        deadline = time.monotonic() + 10           # the sampler thread may be starved on a loaded machine
        while pm.peak_so_far_mb - pm.start_mb < 150 and time.monotonic() < deadline:
            time.sleep(0.02)
        block.close()
    assert pm.seconds > 0
    assert pm.peak_mb - pm.start_mb > 150


def test_machine_description(monkeypatch):
    import torch

    text = machine_description()
    assert "CPU cores" in text
    # the device part is exact: "no GPU" without CUDA, else every device's name and its bf16 support
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = machine_description()
    assert text.endswith("; no GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Test GPU {i}")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    gpus = machine_description()
    assert gpus == text[: -len("no GPU")] + "Test GPU 0, Test GPU 1 (bf16 native)"
