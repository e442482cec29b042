"""Training precision resolved from the CPU's flags, the machine string, and how training stopped."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from migrec import hardware
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.models.sasrec import SASRec
from migrec.registry import load_model

TINY = dict(hidden=8, layers=1, heads=1, max_len=10, dropout=0.0, batch_size=16, lr=0.01, device="cpu",
            progress=False)


@pytest.fixture(scope="module")
def ring():
    """20 items in a ring, each user walks 8 steps of it."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(30):
        start = int(rng.integers(20))
        for j in range(8):
            users.append(f"u{u}"), items.append(f"i{(start + j) % 20}")
    ids = [f"i{k}" for k in range(20)]
    return leave_one_out(Dataset(make_interactions(users, items), make_catalogue(ids, ids), "ring"))


def test_auto_is_bf16_only_with_native_support():
    assert hardware.resolve_precision("auto", "cpu", flags=frozenset({"avx2", "avx512f"})) == "fp32"
    assert hardware.resolve_precision("auto", "cpu", flags=frozenset({"avx2", "avx512_bf16"})) == "bf16"
    assert hardware.resolve_precision("auto", "cpu", flags=frozenset({"amx_bf16"})) == "bf16"
    assert hardware.resolve_precision("auto", "cpu", flags=frozenset()) == "fp32"
    assert hardware.resolve_precision("auto", "mps", flags=frozenset({"avx512_bf16"})) == "fp32"
    # explicit choices stay what they say, whatever the CPU
    assert hardware.resolve_precision("bf16", "cpu", flags=frozenset()) == "bf16"
    assert hardware.resolve_precision("fp32", "cpu", flags=frozenset({"avx512_bf16"})) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        hardware.resolve_precision("fp16")


def test_this_machine_resolves_from_its_own_flags(tmp_path):
    native = bool({"avx512_bf16", "amx_bf16"} & hardware.cpu_flags())
    assert hardware.resolve_precision("auto") == ("bf16" if native else "fp32")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert hardware.cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}     # the first processor's
    assert hardware.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_machine_description_names_cpu_flags_and_cores():
    text = hardware.machine_description(flags=frozenset({"avx2", "fma"}))
    assert "CPU cores" in text and "CPU flags: avx2, lacks avx512f avx512_bf16 amx_bf16" in text
    assert "auto precision: fp32" in text
    assert "auto precision: bf16" in hardware.machine_description(flags=frozenset({"avx512_bf16"}))
    real = hardware.machine_description()
    cpu = hardware._cpuinfo().get("model name")
    assert cpu is None or cpu in real


@pytest.mark.parametrize("flags,expect", [({"avx2"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16")])
def test_fit_records_the_resolved_precision(ring, monkeypatch, flags, expect):
    monkeypatch.setattr(hardware, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    model = SASRec(epochs=2, patience=5, precision="auto", **TINY).fit(ring.train, ring.valid)
    assert model.precision == "auto"                       # the hyper-parameter is left as given
    assert model.training_["precision"] == expect
    assert model.training_["stopped_by"] == "epochs" and model.training_["epochs_run"] == 2


def test_the_time_cap_is_reported_when_it_fires(ring):
    capped = SASRec(epochs=50, patience=50, max_train_seconds=1e-9, **TINY).fit(ring.train, ring.valid)
    assert capped.training_["stopped_by"] == "max_train_seconds" and capped.training_["epochs_run"] == 1
    converged = SASRec(epochs=200, patience=1, max_train_seconds=3600, **TINY).fit(ring.train, ring.valid)
    assert converged.training_["stopped_by"] == "patience" and converged.training_["epochs_run"] < 200


def test_an_artifact_with_the_old_bf16_flag_loads(ring, tmp_path):
    model = SASRec(epochs=1, **TINY).fit(ring.train)
    model.save(tmp_path / "m")
    manifest = tmp_path / "m" / "manifest.json"
    doc = json.loads(manifest.read_text())
    assert doc["training"]["precision"] == "fp32" and doc["params"]["precision"] == "fp32"
    doc["params"]["bf16"] = True
    del doc["params"]["precision"]
    manifest.write_text(json.dumps(doc))
    again = load_model(tmp_path / "m")
    assert again.precision == "bf16" and again.training_ == model.training_


@pytest.mark.parametrize("name, default", [("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8"), ("LRU_CACHE_CAPACITY", "16")])
@pytest.mark.parametrize("given", [None, "100"])
def test_importing_migrec_bounds_the_kernel_caches_unless_the_user_set_them(name, default, given):
    """oneDNN's per-shape kernel cache grew by ~0.8 GB over 3 bf16 epochs at its default size, and
    ideep's (PyTorch's oneDNN bridge) held ~0.4 GB more in a 2-epoch fit."""
    env = {k: v for k, v in os.environ.items() if k != name}
    if given is not None:
        env[name] = given
    code = f"import os, migrec; print(os.environ[{name!r}])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == (given or default)
