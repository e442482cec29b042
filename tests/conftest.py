"""Shared fixtures: where the real data sets live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """$MIGREC_DATA, else <repo>/../shared/data; the test is skipped when it is missing."""
    root = Path(os.environ.get("MIGREC_DATA") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"shared data folder not found: {root}")
    return root


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models on a busy CPU: one torch thread is faster than several contending ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
