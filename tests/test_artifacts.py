"""Saved models are safe, self-describing artifacts (models.artifact): no user data, no pickle,
tampering and foreign encoders refused, a manifest that says what the model is."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_models import SMALL

from migrec.data import Histories
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.encoders import HashingEncoder, encode_catalogue
from migrec.models import artifact
from migrec.models.artifact import ArtifactError
from migrec.models.base import Recommender
from migrec.models.interest import InterestModel
from migrec.models.itemknn import ItemKNN
from migrec.models.matrix_factorization import ALS, BPR
from migrec.models.popularity import Popularity
from migrec.models.sasrec import SASRec
from migrec.registry import ARTIFACTS, load_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MARK = "7f3a-xyz"            # in every user id; must appear in no saved byte
ENCODER = "hashing-xyz"
TINY = dict(SMALL, epochs=3, patience=3)
MAKERS = {
    "popularity": lambda: Popularity(),
    "itemknn": lambda: ItemKNN(neighbors=10),
    "als": lambda: ALS(factors=8, iterations=3, threads=1),
    "bpr": lambda: BPR(factors=8, iterations=10, threads=1),
    "sasrec": lambda: SASRec(**TINY),
    "interest": lambda: InterestModel(use_id=True, experts=2, **TINY),
}


def marked_split():
    """Ring walkers whose user ids carry MARK; item vectors from a named encoder."""
    rng = np.random.default_rng(0)
    users, items, times = [], [], []
    for u in range(16):
        start = rng.integers(20)
        for t in range(int(rng.integers(6, 10))):
            users.append(f"user-{MARK}-{u}")
            items.append(f"i{(start + t) % 20:02d}")
            times.append(float(t))
    catalogue = make_catalogue([f"i{j:02d}" for j in range(20)], [f"alpha{j} beta{j}" for j in range(20)])
    split = leave_one_out(Dataset(make_interactions(users, items, timestamp=times), catalogue, "marked"))
    split.train.item_vectors = encode_catalogue(split.train.catalogue, HashingEncoder())
    split.train.encoder = ENCODER
    return split


@pytest.fixture(scope="module")
def split():
    return marked_split()


@pytest.fixture(scope="module")
def saved(split, tmp_path_factory):
    """name -> (fitted model, its folder)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, make in MAKERS.items():
        model = make().fit(split.train, split.valid)
        model.save(root / name)
        out[name] = (model, root / name)
    return out


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file())


def manifest_of(path) -> dict:
    return json.loads((Path(path) / artifact.MANIFEST).read_text())


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in files_under(src):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.read_bytes())
    return dst


# -- no user data, no pickle -----------------------------------------------------------------------
def test_split_really_has_marked_users(split):
    assert all(MARK in u for u in split.train.user_ids) and split.train.n_users == 16


@pytest.mark.parametrize("name", list(MAKERS))
def test_no_user_id_in_any_saved_byte(saved, name):
    _, folder = saved[name]
    files = files_under(folder)
    assert {f.name for f in files} == {artifact.MANIFEST, artifact.ARRAYS}
    for f in files:
        assert MARK.encode() not in f.read_bytes(), f
        assert f.suffix not in (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib"), f


@pytest.mark.parametrize("name", ["sasrec", "interest", "als", "popularity"])
def test_no_user_id_after_an_update(saved, split, tmp_path, name):
    model = saved[name][0].clone()
    hist = Histories.from_sequences(split.train.user_ids, split.train.item_ids, split.train.sequences)
    events = pd.DataFrame({"user_id": [f"user-{MARK}-new"] * 3 + [split.train.user_ids[0]],
                           "item_id": ["i01", "i02", "i03", "i05"], "timestamp": [50.0, 51.0, 52.0, 53.0]})
    model.partial_fit(events, histories=hist)
    model.save(tmp_path / name)
    for f in files_under(tmp_path / name):
        assert MARK.encode() not in f.read_bytes(), f


# -- the manifest ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MAKERS))
def test_manifest_describes_the_model(saved, split, name):
    model, folder = saved[name]
    m = manifest_of(folder)
    assert m["format"] == artifact.FORMAT and m["format_version"] == artifact.FORMAT_VERSION
    assert m["registry"] == model.registry and ARTIFACTS[m["registry"]] is type(model)
    assert m["params"] == json.loads(json.dumps(model.get_params()))
    assert m["item_ids"] == [str(i) for i in split.train.item_ids]
    counts = {"users": 16, "items": 20, "events": split.train.n_interactions,
              "items_with_events": int((split.train.item_counts() > 0).sum())}
    assert {k: m["training"][k] for k in counts} == counts
    # beyond the counts only how training ran (no user data): precision, stop reason, epochs, seconds
    assert set(m["training"]) - set(counts) <= {"precision", "stopped_by", "epochs_run", "train_seconds"}
    assert m["children"] == []
    assert set(m["files"]) == {artifact.ARRAYS}
    if name == "interest":
        assert m["encoder"] == {"model_id": ENCODER, "dim": split.train.item_vectors.shape[1]}
        assert model.encoder_info() == m["encoder"]
    else:
        assert m["encoder"] is None


# -- tampering is refused ---------------------------------------------------------------------------
def tampered(saved, tmp_path, change) -> Path:
    folder = copy_folder(saved["sasrec"][1], tmp_path / "copy")
    m = manifest_of(folder)
    change(m)
    (folder / artifact.MANIFEST).write_text(json.dumps(m))
    return folder


def test_untouched_copy_loads(saved, tmp_path):
    model, folder = saved["sasrec"]
    loaded = load_model(copy_folder(folder, tmp_path / "copy"))
    hists = [model.item_index(["i01", "i02"])]
    np.testing.assert_allclose(loaded.score_histories(hists), model.score_histories(hists), rtol=0, atol=1e-5)


@pytest.mark.parametrize("field,value,match", [
    ("format_version", artifact.FORMAT_VERSION + 1, "format_version"),
    ("format_version", None, "format_version"),
    ("format", "pickle", "format"),
    ("registry", "os.system", "os.system"),
    ("registry", "__main__.Evil", "Evil"),
])
def test_a_changed_manifest_is_refused(saved, tmp_path, field, value, match):
    folder = tampered(saved, tmp_path, lambda m: m.update({field: value}))
    with pytest.raises(ArtifactError, match=match):
        load_model(folder)
    with pytest.raises(ArtifactError, match=match):
        Recommender.load(folder)


@pytest.mark.parametrize("field", ["registry", "params", "item_ids", "state", "files", "children"])
def test_a_missing_manifest_field_is_named(saved, tmp_path, field):
    folder = tampered(saved, tmp_path, lambda m: m.pop(field))
    with pytest.raises(ArtifactError, match=repr(field)):
        load_model(folder)


def test_changed_or_foreign_files_are_refused(saved, tmp_path):
    folder = copy_folder(saved["sasrec"][1], tmp_path / "bytes")
    data = bytearray((folder / artifact.ARRAYS).read_bytes())
    data[-5] ^= 0xFF                                   # one flipped byte in the weights
    (folder / artifact.ARRAYS).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_model(folder)

    outside = tampered(saved, tmp_path / "path", lambda m: m.update(files={"../arrays.safetensors": "0" * 64}))
    with pytest.raises(ArtifactError, match="not in"):
        load_model(outside)

    gone = copy_folder(saved["sasrec"][1], tmp_path / "gone")
    (gone / artifact.MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_model(gone)
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_model(tmp_path / "never-saved")

    broken = copy_folder(saved["sasrec"][1], tmp_path / "broken")
    (broken / artifact.MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        load_model(broken)


def test_load_refuses_another_class(saved):
    _, folder = saved["popularity"]
    with pytest.raises(ArtifactError, match="popularity"):
        SASRec.load(folder)
    with pytest.raises(ArtifactError, match="not a SASRec"):
        load_model(folder, expect=SASRec)
    assert isinstance(load_model(folder, expect=Popularity), Popularity)
    assert isinstance(Recommender.load(folder), Popularity)


# -- the text encoder travels with the model ----------------------------------------------------------
def test_a_foreign_encoder_is_refused(saved, split):
    model, folder = saved["interest"]
    with pytest.raises(ValueError, match="other-model"):
        load_model(folder, encoder="other-model")
    loaded = load_model(folder, encoder=ENCODER)
    assert loaded.encoder_info() == {"model_id": ENCODER, "dim": split.train.item_vectors.shape[1]}
    assert load_model(saved["sasrec"][1], encoder="other-model").encoder_info() is None   # ID model: no text

    vector = HashingEncoder().encode(["alpha3 beta3 new"])
    n = loaded.n_items
    with pytest.raises(ValueError, match="'other'"):
        loaded.add_items(["inew"], vector, encoder="other")
    assert loaded.n_items == n                             # a refused add changes nothing
    events = pd.DataFrame({"user_id": ["x", "x"], "item_id": ["i01", "inew"]})
    with pytest.raises(ValueError, match="'other'"):
        loaded.partial_fit(events, item_vectors={"inew": vector[0]}, encoder="other")
    assert loaded.n_items == n
    with pytest.raises(ValueError, match="'other'"):
        loaded.fine_tune(dataclasses.replace(split.train, encoder="other"))
    loaded.add_items(["inew"], vector, encoder=ENCODER)
    assert loaded.n_items == n + 1
