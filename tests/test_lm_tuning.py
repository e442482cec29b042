"""Fine-tuning the sentence model's top layers inside the interest model (encoders.tuning, models.text_tower)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.encoders import SentenceTransformerEncoder, encode_catalogue
from migrec.encoders.tuning import encode_lower_states, lower_states
from migrec.models.interest import InterestModel
from migrec.models.text_tower import TextTower
from migrec.registry import load_model

TEXTS = ["a film about space travel", "Heat (1995) Action|Crime|Thriller", "x",
         "kitchen knife set, stainless steel, 8 pieces, with a wooden block and a sharpener " * 2]


@pytest.fixture(scope="module")
def encoder():
    return SentenceTransformerEncoder(device="cpu", show_progress=False)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_tower_over_lower_states_reproduces_the_frozen_encoder(encoder, layers, torch_one_thread):
    states = lower_states(TEXTS, encoder, layers=layers, progress=False)
    counts = [len(encoder.model[0].tokenizer(t)["input_ids"]) for t in TEXTS]
    assert states.offsets.tolist() == np.concatenate([[0], np.cumsum(counts)]).tolist()   # ragged: no padding
    assert states.tokens.dtype == np.float16 and len(states) == len(TEXTS)
    tower = TextTower(states, layers).eval()
    vectors = tower.all_rows().numpy()
    frozen = encoder.encode(TEXTS)
    assert np.abs(vectors - frozen).max() < 2e-3          # fp16 token states, otherwise the same model
    # pooling the kept states without the top layers is another thing: the split is where it says
    pooled = np.stack([states.tokens[a:b].astype(np.float32).mean(0) for a, b in
                       zip(states.offsets[:-1], states.offsets[1:])])
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    assert np.abs(pooled - frozen).max() > 0.05


def test_lower_states_refuse_a_depth_the_model_lacks(encoder):
    with pytest.raises(ValueError, match="layers must be in 1..6"):
        lower_states(TEXTS, encoder, layers=7)


WORDS = {"jazz": "jazz saxophone swing trumpet", "rock": "rock guitar riff drums"}


@pytest.fixture(scope="module")
def topics(encoder):
    rng = np.random.default_rng(3)
    ids, titles = [], []
    for topic, words in WORDS.items():
        for k in range(10):
            ids.append(f"{topic}{k}")
            titles.append(f"{words} record {k}")
    users, items = [], []
    for u in range(40):
        topic = "jazz" if u % 2 == 0 else "rock"
        for k in rng.permutation(10)[: rng.integers(6, 9)]:
            users.append(f"u{u:02d}")
            items.append(f"{topic}{k}")
    split = leave_one_out(Dataset(make_interactions(users, items), make_catalogue(ids, titles), "topics"))
    split.train.item_vectors = encode_catalogue(split.train.catalogue, encoder)
    split.train.encoder = encoder.model_id
    split.train.item_states = encode_lower_states(split.train.catalogue, encoder, layers=1)
    return split


def tuned_model(**kw):
    params = dict(hidden=16, layers=1, heads=1, max_len=10, epochs=3, patience=10, batch_size=16, lr=5e-3,
                  progress=False, text_layers=1, text_lr=1e-3, seed=0)
    return InterestModel(**{**params, **kw})


@pytest.fixture(scope="module")
def fitted(topics, torch_one_thread):
    return tuned_model().fit(topics.train, topics.valid)


def test_fine_tuning_moves_the_text_vectors_and_leaves_a_plain_model(topics, fitted, encoder):
    frozen = topics.train.item_vectors
    moved = np.abs(fitted.text_vectors_ - frozen).max(1)
    assert moved.min() > 1e-3                         # every item's sentence vector changed
    initial = topics.train.item_states.weights
    assert set(fitted.text_tower_) == set(initial)
    assert max(np.abs(fitted.text_tower_[k] - initial[k]).max() for k in initial) > 1e-4
    assert fitted.encoder_info()["model_id"].startswith(encoder.model_id + "+tuned1:")
    table = fitted.net_["item_table"]
    assert table.tower is None and "_lower" not in fitted.__dict__       # states and tower dropped after fit
    np.testing.assert_allclose(table.text[1:].numpy(), fitted.text_vectors_)
    assert fitted.training_["epochs_run"] == 3


def test_the_tuned_encoder_encodes_into_the_tuned_space(topics, fitted):
    tuned = fitted.text_encoder(device="cpu", show_progress=False)
    assert tuned.model_id == fitted.encoder_info()["model_id"]
    again = encode_catalogue(topics.train.catalogue, tuned)
    assert np.abs(again - fitted.text_vectors_).max() < 2e-3


def test_new_items_need_the_tuned_encoders_vectors(topics, fitted, encoder):
    model = fitted.clone()
    text = "jazz saxophone swing trumpet record new"
    with pytest.raises(ValueError, match="tuned1"):
        model.add_items(["jazz_new"], {"jazz_new": encoder.encode([text])[0]}, encoder=encoder.model_id)
    tuned = model.text_encoder(device="cpu", show_progress=False)
    model.add_items(["jazz_new"], {"jazz_new": tuned.encode([text])[0]}, encoder=tuned.model_id)
    assert model.knows(["jazz_new"]).all()
    with pytest.raises(ValueError, match="frozen encoder"):
        InterestModel(**tuned_model(text_layers=0).get_params()).fit(topics.train).text_encoder()


def test_a_tuned_model_saves_and_loads_with_its_tower_weights(topics, fitted, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    histories = [topics.train.sequences[u] for u in range(5)]
    np.testing.assert_allclose(loaded.score_histories(histories), fitted.score_histories(histories), rtol=1e-5,
                               atol=1e-5)
    assert loaded.encoder_info() == fitted.encoder_info()
    for k, v in fitted.text_tower_.items():
        np.testing.assert_array_equal(loaded.text_tower_[k], v)


def test_the_tower_trains_at_its_own_rate_on_a_bounded_sample_of_rows(topics, torch_one_thread):
    model = tuned_model(text_rows=3)
    model._summarise(topics.train)
    model.seen_ = (topics.train.item_counts() > 0).astype(np.float32)
    model._prepare_items(topics.train)
    model._build()
    table = model.net_["item_table"]
    tower = set(map(id, table.tower.parameters()))
    groups = model.optimizer_groups(list(model.net_.parameters()), 5e-3)
    assert [g["lr"] for g in groups] == [5e-3, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == tower and not tower & {id(p) for p in groups[0]["params"]}
    table.train()
    before = table.text.clone()
    index = torch.arange(1, 11)
    text = table._tuned_text(index)
    changed = (table.text != before).any(1)
    assert int(changed.sum()) == 3 and set(torch.nonzero(changed).flatten().tolist()) <= set(index.tolist())
    # the rows given back: the 3 fresh ones where they were recomputed, the table's own elsewhere
    torch.testing.assert_close(text.detach(), table.text[index])
    text.sum().backward()
    assert all(p.grad is not None for p in table.tower.parameters() if p.requires_grad)
    table.eval()
    table._tuned_text(index)                             # eval: every row brought up to date, once
    assert not table.stale


def test_bad_tuning_setups_are_refused(topics):
    train = topics.train
    states = train.item_states
    try:
        train.item_states = None
        with pytest.raises(ValueError, match="item_states"):
            tuned_model(epochs=1).fit(train)
    finally:
        train.item_states = states
    with pytest.raises(ValueError, match="text_layers=2"):
        tuned_model(text_layers=2, epochs=1).fit(train)
