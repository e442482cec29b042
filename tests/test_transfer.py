"""Cross-domain transfer: domain bookkeeping, candidate ranking, regimes and cold start.

Synthetic two-domain world made here: 4 topics; each domain ("a", "b") has 5 items per
topic. An item's text vector is its topic (one-hot) plus its domain flag and a little
noise, so a model that learnt "a user stays in a topic" in domain a can find the right
topic in domain b through the text alone. Each user has one topic for life.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from migrec.data import DataError, Dataset, make_catalogue, make_interactions
from migrec.data.multidomain import combine, hold_out_users, overlapping_users, sample_users
from migrec.data.split import EvalSet, TrainSet
from migrec.evaluation import evaluate
from migrec.models.interest import InterestModel
from migrec.registry import load_model
from migrec.transfer import (DomainView, MappedUsers, ModelBank, TransferExperiment, flag_negative_transfer,
                             make_task, restrict)

TOPICS, PER_TOPIC = 4, 5
SMALL = dict(hidden=16, layers=1, heads=1, max_len=20, dropout=0.0, batch_size=16, lr=0.01, device="cpu",
             progress=False, seed=0, experts=2, adapter_dropout=0.0, patience=50)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _items(domain: str):
    ids = [f"{domain}{t}-{k}" for t in range(TOPICS) for k in range(PER_TOPIC)]
    return ids, [t for t in range(TOPICS) for _ in range(PER_TOPIC)]


def _world(seed=0, n_users=60):
    rng = np.random.default_rng(seed)
    users, items, domains = [], [], []

    def walk(user, domain, topic, n):
        ids = [f"{domain}{topic}-{k}" for k in range(PER_TOPIC)]
        start = rng.integers(PER_TOPIC)
        for j in range(n):
            users.append(user), items.append(ids[(start + j) % PER_TOPIC]), domains.append(domain)

    for u in range(n_users):
        topic = u % TOPICS
        kind = ("a", "b", "ab")[u % 3]
        for d in ("a", "b"):
            if d in kind:
                walk(f"{kind}:{u}", d, topic, 5)
    heldout = {"valid": [], "test": []}
    for part, offset in (("valid", 1000), ("test", 2000)):
        for u in range(24):
            topic, user = u % TOPICS, f"{part}:{u}"
            walk(user, "a", topic, 4)
            walk(user, "b", topic, 2)   # the last b event is the target
            heldout[part].append(user)
    log = make_interactions(users, items, domain=domains, event="click")
    ids_a, top_a = _items("a")
    ids_b, top_b = _items("b")
    cat = make_catalogue(ids_a + ids_b, [f"item {i}" for i in ids_a + ids_b], domain=["a"] * 20 + ["b"] * 20)
    vectors = np.zeros((40, TOPICS + 2), np.float32)
    vectors[np.arange(40), top_a + top_b] = 1.0
    vectors[:20, TOPICS], vectors[20:, TOPICS + 1] = 0.5, 0.5
    vectors += 0.05 * rng.standard_normal(vectors.shape).astype(np.float32)
    return Dataset(log, cat, "synthetic", {"heldout_users": heldout}), vectors


@pytest.fixture(scope="module")
def world():
    return _world()


def _task(world, target="b", share=0.1):
    data, vectors = world
    task = make_task(data, target=target, cold_item_share=share, seed=0)
    task.train.item_vectors = vectors
    return task


# -- data bookkeeping -------------------------------------------------------------------
def test_combine_keeps_domains_and_refuses_item_id_collisions(world):
    data, _ = world
    a = data.with_interactions(data.interactions[data.interactions["domain"] == "a"])
    other = Dataset(make_interactions(["x"], ["z1"], domain="c"), make_catalogue(["z1"], ["zed"], domain="c"), "c")
    both = combine(data, other, name="three")
    assert both.domains == ["a", "b", "c"] and len(both.interactions) == len(data.interactions) + 1
    assert both.meta["heldout_users"] == data.meta["heldout_users"]
    with pytest.raises(DataError, match="unique across domains"):
        combine(a, data)
    assert "ab:2" in overlapping_users(data, ["a", "b"]) and "a:0" not in overlapping_users(data, ["a", "b"])


def test_task_has_no_leakage_and_holds_out_cold_items(world):
    task = _task(world)
    held = {u for part in ("valid", "test") for u in world[0].meta["heldout_users"][part]}
    for u, seq in zip(task.train.user_ids, task.train.sequences):
        if u in held:
            assert len(seq) == 0          # held-out users never train
    trained = np.unique(np.concatenate(task.train.sequences))
    assert not np.isin(task.cold_items, trained).any()
    assert len(task.cold_items) == 4      # 10 % of 20 items in each of the two domains
    assert len(task.test) == 24 and all(task.target_mask[t].all() for t in task.test.targets)
    assert np.array_equal(task.candidates, np.arange(20, 40))
    assert (task.target_events() == 1).all()
    assert all(not task.target_mask[h].any() for h in task.cold_users().histories)


def test_cold_item_events_make_a_case_of_every_cold_target_domain_event_after_its_prefix(world):
    task = _task(world)
    cold_b = np.intersect1d(task.cold_items, task.candidates)
    cold_a = np.setdiff1d(task.cold_items, task.candidates)
    warm_b = np.setdiff1d(task.candidates, task.cold_items)
    cb, ca, w = int(cold_b[0]), int(cold_a[0]), int(warm_b[0])
    cases = EvalSet(np.array([7, 8]), [np.array([cb, w, ca, cb, w]), np.array([w, w])], [np.array([cb]), np.array([w])])
    got = task.cold_item_events(cases)
    # user 7: the first event has nothing before it; the cold a-item is not a target-domain item;
    # the second cold b-event and the cold target each become a case; user 8 has no cold event
    assert list(got.users) == [7, 7]
    assert [list(h) for h in got.histories] == [[cb, w, ca], [cb, w, ca, cb, w]]
    assert [list(t) for t in got.targets] == [[cb], [cb]]
    # on the task's own test cases: one case per cold b-target at least, every target a cold b-item
    own = task.cold_item_events()
    assert task.cold_item_cases().sum() == 3 and len(own) >= 3
    assert all(np.isin(t, cold_b).all() and len(h) > 0 for h, t in zip(own.histories, own.targets))


def test_extra_valid_moves_cross_domain_users_last_events_from_training_to_validation(world):
    data, _ = world
    plain = make_task(data, target="b", cold_item_share=0.0)
    task = make_task(data, target="b", cold_item_share=0.0, extra_valid=5)
    assert np.array_equal(task.valid.users[:24], plain.valid.users) and len(task.test) == len(plain.test)
    shortened = [u for u, (a, b) in enumerate(zip(plain.train.sequences, task.train.sequences)) if len(a) != len(b)]
    assert len(shortened) == 5
    for u in shortened:
        whole, kept = plain.train.sequences[u], task.train.sequences[u]
        assert np.array_equal(kept, whole[:-1])                      # only the last event left training
        assert str(task.train.user_ids[u]).startswith("ab:")          # drawn among two-domain users
    # every "ab" user's last event is a b item, so each drawn user is one more b validation case
    assert list(task.valid.users[24:]) == shortened
    assert all(np.array_equal(h, plain.train.sequences[u][:-1]) and t[0] == plain.train.sequences[u][-1]
               for u, h, t in zip(task.valid.users[24:], task.valid.histories[24:], task.valid.targets[24:]))
    assert "plus 5 validation cases from 5 training users" in task.protocol
    again = make_task(data, target="b", cold_item_share=0.0, extra_valid=5, seed=1)
    assert list(again.valid.users[24:]) != shortened               # the seed draws the users
    with pytest.raises(ValueError, match="only 20 training users have events in two or more domains"):
        make_task(data, target="b", extra_valid=21)
    with pytest.raises(ValueError, match="needs held-out users"):
        make_task(Dataset(data.interactions, data.catalogue, "plain"), target="b", extra_valid=5)


def test_leave_one_out_task_within_the_target_domain(world):
    data, _ = world
    plain = Dataset(data.interactions, data.catalogue, "plain")   # no held-out lists: leave-one-out
    task = make_task(plain, target="b", cold_item_share=0.0)
    index = {u: i for i, u in enumerate(task.train.user_ids)}
    u = index["ab:2"]
    seq = task.train.sequences[u]
    assert len(seq) == 5 + 3              # 5 a-events, then b-events before the valid target
    case = list(task.test.users).index(u)
    assert task.test.histories[case][-1] == task.valid.targets[list(task.valid.users).index(u)][0]


def test_evaluate_ranks_among_candidates_only(world):
    task = _task(world)

    class Oracle:   # scores the true target highest, and a non-candidate higher still
        def __init__(self):
            self.case = 0   # the evaluator scores the cases in order

        def score_histories(self, histories):
            s = np.zeros((len(histories), task.train.n_items), np.float32)
            s[:, 0] = 10.0
            for row, h in enumerate(histories):
                assert np.array_equal(h, task.test.histories[self.case])
                s[row, task.test.targets[self.case][0]] = 5.0
                self.case += 1
            return s

    full = evaluate(Oracle(), task.test, task.train, ks=(1,), beyond=False, segments=False)
    local = evaluate(Oracle(), task.test, task.train, ks=(1,), beyond=False, segments=False,
                     candidates=task.candidates, sampled_negatives=5)
    item0_in_history = np.mean([0 in h for h in task.test.histories])   # then it is masked, target is first
    assert full.metrics["HR@1"] == pytest.approx(item0_in_history) and item0_in_history < 0.5
    assert local.metrics["HR@1"] == 1.0 and local.metrics["sampled:HR@1"] == 1.0
    with pytest.raises(ValueError, match="outside the candidates"):
        evaluate(Oracle(), task.test, task.train, candidates=np.arange(20), beyond=False)


# -- regimes ------------------------------------------------------------------------------
def test_zero_shot_transfer_through_text_and_adapter_fine_tuning(world):
    task = _task(world)
    source = InterestModel(domain_adapters=True, use_id=False, epochs=40, negatives=8, **SMALL)
    source.fit(restrict(task.train, task.source_mask))
    res = evaluate(source, task.test, task.train, ks=(5,), beyond=False, segments=False, candidates=task.candidates)
    # 20 candidates, 5 in the user's topic (one in the history): a random ranking gets HR@5 = 0.25
    assert res.metrics["HR@5"] >= 0.75
    transformer = {k: v.clone() for k, v in source.net_["transformer"].state_dict().items()}
    adapter = source.net_["item_table"].domain_adapter.detach().clone()
    source.set_params(epochs=3, lr=0.005).fine_tune(restrict(task.train, task.target_mask), trainable="adapter")
    assert all(torch.equal(v, source.net_["transformer"].state_dict()[k]) for k, v in transformer.items())
    assert not torch.equal(adapter, source.net_["item_table"].domain_adapter)


def test_cold_items_are_scored_by_text_and_new_items_are_recommendable_at_once(world):
    task = _task(world)
    model = InterestModel(domain_adapters=True, use_id=True, epochs=40, **SMALL).fit(task.train)
    cold = task.cold_items[task.target_mask[task.cold_items]]
    cases = task.cold_item_cases()
    assert cases.sum() >= 1
    res = evaluate(model, task.test.subset(cases), task.train, ks=(10,), beyond=False, segments=False,
                   candidates=task.candidates)
    assert res.metrics["HR@10"] == 1.0    # random: about 0.5 among 20 candidates
    # a brand-new b item of topic 2, added by text only, ranks first for a topic-2 user
    vec = np.zeros((1, TOPICS + 2), np.float32)
    vec[0, 2], vec[0, TOPICS + 1] = 1.0, 0.5
    model.add_items(["b2-new"], vec, domains=["b"])
    history = task.train.item_ids[task.train.sequences[task.train.user_index()["ab:2"]]]
    scores = model.score([history], list(model.item_ids_[task.candidates]) + ["b2-new"])[0]
    assert scores[-1] >= np.sort(scores)[-6]   # among the topic's items, not behind other topics
    with pytest.raises(ValueError, match="unknown domains"):
        model.add_items(["x-new"], vec, domains=["zzz"])
    assert len(cold) == 2


def test_experiment_reports_regimes_and_flags_negative_transfer(world):
    task = _task(world)
    bank = ModelBank(task.train, dict(epochs=15, use_id=False, **SMALL)).add_valid(task)
    result = TransferExperiment(task, bank, models=["popularity", "text-knn", "target-only", "transfer-zero-shot",
                                                    "transfer-joint"], sampled_negatives=10).run()
    rows = {r["model"]: r for r in result.rows}
    # the flags are flag_negative_transfer's on these rows (its rule is tested on its own below)
    bare = [{"model": r["model"], "metrics": dict(r["metrics"])} for r in result.rows]
    for want in flag_negative_transfer(bare):
        for key in ("negative_transfer", "versus_target_only"):
            assert rows[want["model"]].get(key) == want.get(key), (want["model"], key)
    assert "negative_transfer" in rows["transfer-joint"] and "negative_transfer" not in rows["popularity"]
    assert result.negative_transfer == [r["model"] for r in result.rows if r.get("negative_transfer")]
    assert {r["repeats"] for r in result.rows} == {"exclude"} and result.repeats == "exclude"
    m = rows["transfer-joint"]["metrics"]
    assert m["cold-users:n"] == 24 and m["cold-items:n"] + m["warm-items:n"] == 24
    assert 0.0 <= m["sampled:NDCG@10"] <= 1.0 and m["NDCG@10"] > rows["popularity"]["metrics"]["NDCG@10"]
    assert "target-only" in result.to_markdown()
    # text neighbours: no training, users walk within one topic and a topic's items share a text direction
    knn = rows["text-knn"]
    assert "negative_transfer" not in knn
    assert knn["metrics"]["NDCG@10"] > 2 * rows["popularity"]["metrics"]["NDCG@10"]


def test_negative_transfer_flag_compares_validation_ndcg():
    rows = [{"model": "target-only", "metrics": {"valid:NDCG@10": 0.2}},
            {"model": "transfer-full", "metrics": {"valid:NDCG@10": 0.1}},
            {"model": "transfer-joint", "metrics": {"valid:NDCG@10": 0.3}},
            {"model": "popularity", "metrics": {"valid:NDCG@10": 0.0}}]
    flagged = {r["model"]: r for r in flag_negative_transfer(rows)}
    assert flagged["transfer-full"]["negative_transfer"] and "NEGATIVE" in flagged["transfer-full"]["versus_target_only"]
    assert not flagged["transfer-joint"]["negative_transfer"] and "+50.0%" in flagged["transfer-joint"]["versus_target_only"]
    assert "negative_transfer" not in flagged["popularity"]


def test_domain_view_hides_other_domains(world):
    task = _task(world)

    class Echo:
        def score_histories(self, histories):
            self.seen = histories
            return np.zeros((len(histories), task.train.n_items), np.float32)

    echo = Echo()
    DomainView(echo, task.target_mask).score_histories(task.test.histories[:3])
    assert all(task.target_mask[h].all() and len(h) == 1 for h in echo.seen)


# -- saving and loading --------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(world):
    task = _task(world)
    kw = dict(SMALL, epochs=20, use_id=True)
    source = InterestModel(domain_adapters=True, **kw).fit(restrict(task.train, task.source_mask))
    target = InterestModel(domain_adapters=True, **kw).fit(restrict(task.train, task.target_mask))
    return task, source, target


def _user_ids_in(folder, user_ids) -> list:
    """The user ids whose bytes occur in any file under `folder`."""
    blobs = [f.read_bytes() for f in folder.rglob("*") if f.is_file()]
    assert blobs
    return [u for u in user_ids if any(str(u).encode() in b for b in blobs)]


def _all_users(world, task) -> list:
    held = world[0].meta["heldout_users"]
    return sorted(set(task.train.user_ids) | set(held["valid"]) | set(held["test"]))


def test_domain_view_saves_and_loads_with_identical_scores_and_no_user_ids(world, fitted, tmp_path):
    task, _, target = fitted
    view = DomainView(target, task.target_mask, "target-only")
    assert view.item_ids_ is target.item_ids_ and view.encoder_info() == target.encoder_info()
    view.save(tmp_path / "view")
    again = load_model(tmp_path / "view", expect=DomainView)
    assert isinstance(again.model, InterestModel) and again.name == "target-only"
    assert np.array_equal(again.keep, task.target_mask) and again.keep.dtype == bool
    hists = task.test.histories + task.cold_users().histories
    assert np.array_equal(again.score_histories(hists), view.score_histories(hists))
    # the view hides the source items: a mixed history scores as its target part alone
    mixed = task.test.histories[0]
    assert np.array_equal(again.score_histories([mixed]), target.score_histories([mixed[task.target_mask[mixed]]]))
    assert not np.array_equal(target.score_histories([mixed]), again.score_histories([mixed]))
    ids, _ = again.recommend_history(task.train.item_ids[mixed], k=3, candidates=task.train.item_ids[task.candidates])
    assert len(ids) == 3 and all(i.startswith("b") for i in ids)
    assert _user_ids_in(tmp_path / "view", _all_users(world, task)) == []


def test_mapped_users_map_source_only_users_and_save_and_load(world, fitted, tmp_path):
    task, source, target = fitted
    mapped = MappedUsers(source, target, task.source_mask, task.target_mask, seed=0).fit(task.train)
    assert mapped.n_overlap_ == 20 and mapped.item_ids_ is target.item_ids_
    assert mapped.training_["events"] == task.train.n_interactions
    cold = task.cold_users().histories                      # source history only
    scores = mapped.score_histories(cold)
    empty = target.score_histories([np.zeros(0, dtype=np.int64)])[0]
    assert not np.allclose(scores, empty)                   # they are mapped, not scored as empty histories
    warm = task.test.histories                              # with target history: the target model decides
    assert np.array_equal(mapped.score_histories(warm),
                          target.score_histories([h[task.target_mask[h]] for h in warm]))
    mapped.save(tmp_path / "mapped")
    assert sorted(p.name for p in (tmp_path / "mapped").iterdir() if p.is_dir()) == ["source_model", "target_model"]
    again = load_model(tmp_path / "mapped")
    assert isinstance(again, MappedUsers) and again.n_overlap_ == 20 and again.get_params()["seed"] == 0
    assert np.array_equal(again.source_mask, task.source_mask)
    assert np.array_equal(again.score_histories(cold + warm), mapped.score_histories(cold + warm))
    assert _user_ids_in(tmp_path / "mapped", _all_users(world, task)) == []
    assert again.training_ == mapped.training_
    with pytest.raises(RuntimeError, match="MappedUsers is not fitted"):
        MappedUsers(source, target, task.source_mask, task.target_mask).score_histories(cold)
    other = TrainSet(task.train.user_ids, task.train.item_ids[::-1], task.train.sequences, task.train.catalogue)
    with pytest.raises(ValueError, match="not the 40 items of the target model"):
        MappedUsers(source, target, task.source_mask, task.target_mask).fit(other)


@pytest.fixture
def counted(monkeypatch):
    """Counts InterestModel fits and fine-tunes (to see what a bank trains and what it reuses)."""
    calls = {"fit": 0, "fine_tune": 0}
    for method in calls:
        real = getattr(InterestModel, method)

        def counting(self, *a, _real=real, _method=method, **k):
            calls[_method] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(InterestModel, method, counting)
    return calls


def test_model_bank_fits_once_saves_and_reuses_from_disk(world, tmp_path, counted):
    task = _task(world)
    params = dict(SMALL, epochs=3, use_id=False)
    bank = ModelBank(task.train, params, save_dir=tmp_path).add_valid(task)
    pretrained = bank.interest(("a",))
    assert bank.interest(["a"]) is pretrained and counted == {"fit": 1, "fine_tune": 0}   # fitted once
    hists = task.test.histories[:6]
    before = pretrained.score_histories(hists)
    tuned = {t: bank.fine_tuned(task, t) for t in ("all", "adapter")}
    assert bank.fine_tuned(task, "all") is tuned["all"] and counted == {"fit": 1, "fine_tune": 2}
    assert np.array_equal(pretrained.score_histories(hists), before)    # fine-tuning left the source model alone
    assert not np.array_equal(tuned["all"].score_histories(hists), before)
    keys = [("interest", ("a",)), ("fine-tune", ("a",), "b", "all"), ("fine-tune", ("a",), "b", "adapter")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["interest_a", "fine-tune_a_b_all", "fine-tune_a_b_adapter"])
    assert all((tmp_path / p / "cost.json").exists() for p in ("interest_a", "fine-tune_a_b_all"))
    # a second bank on the same folder: every model read from disk, nothing trained again
    again = ModelBank(task.train, params, save_dir=tmp_path).add_valid(task)
    loaded = {"pre": again.interest(("a",)), **{t: again.fine_tuned(task, t) for t in ("all", "adapter")}}
    assert counted == {"fit": 1, "fine_tune": 2}
    assert loaded["all"] is not tuned["all"]
    for key in keys:
        assert again.costs[key] == pytest.approx(bank.costs[key])         # read from cost.json
    assert np.array_equal(loaded["pre"].score_histories(hists), before)
    for t in ("all", "adapter"):
        assert np.array_equal(loaded[t].score_histories(hists), tuned[t].score_histories(hists))
    assert _user_ids_in(tmp_path, _all_users(world, task)) == []
    # other settings on the same folder: the saved models are not reused but fitted again and replaced
    other = ModelBank(task.train, {**params, "lr": params["lr"] / 2}, save_dir=tmp_path).add_valid(task)
    other.interest(("a",))
    assert counted == {"fit": 2, "fine_tune": 2}
    assert json.loads((tmp_path / "interest_a" / "settings.json").read_text())["params"]["lr"] == other.params["lr"]
    other.fine_tuned(task, "all")                     # its settings hold the changed parameters too: refitted
    assert counted == {"fit": 2, "fine_tune": 3}
    # the same settings over other training data: refitted as well
    shorter = TrainSet(task.train.user_ids, task.train.item_ids, [s[:-1] for s in task.train.sequences],
                       task.train.catalogue, None, task.train.item_vectors, task.train.encoder)
    assert ModelBank(shorter, params).data_digest != bank.data_digest
    ModelBank(shorter, other.params, save_dir=tmp_path).add_valid(task).interest(("a",))
    assert counted == {"fit": 3, "fine_tune": 3}


def test_adapter_and_mapping_regimes_through_the_bank(world, counted):
    task = _task(world)
    bank = ModelBank(task.train, dict(SMALL, epochs=3, use_id=True)).add_valid(task)
    experiment = TransferExperiment(task, bank, models=["target-only", "transfer-adapter", "transfer-mapping"],
                                    sampled_negatives=10)
    # adapter: the source model's clone with only the text adapters fine-tuned on the target users
    adapted, seconds, _ = experiment.build("transfer-adapter")
    source = bank.interest(("a",))
    assert counted == {"fit": 1, "fine_tune": 1} and adapted is not source
    assert seconds == pytest.approx(bank.costs[("interest", ("a",))][0]
                                    + bank.costs[("fine-tune", ("a",), "b", "adapter")][0])
    frozen, tuned = source.net_.state_dict(), adapted.net_.state_dict()
    moved = {k for k in frozen if not torch.equal(frozen[k], tuned[k])}
    assert moved and all(k.startswith(("item_table.adapter", "item_table.domain_")) for k in moved), sorted(moved)
    # mapping: the bank's own single-domain models, one per side, and a mapping learnt between them
    mapped, seconds, _ = experiment.build("transfer-mapping")
    target = bank.interest(("b",))
    assert isinstance(mapped, MappedUsers) and counted == {"fit": 2, "fine_tune": 1}
    assert mapped.source_model is source and mapped.target_model is target and mapped.n_overlap_ == 20
    assert seconds > bank.cost(("interest", ("a",)), ("interest", ("b",)))[0]
    cold = task.cold_users().histories
    assert not np.allclose(mapped.score_histories(cold), target.score_histories([np.zeros(0, np.int64)] * len(cold)))
    result = experiment.run()                              # built again from the bank: no more training
    assert counted == {"fit": 2, "fine_tune": 1}
    assert [r["model"] for r in result.rows] == ["target-only", "transfer-adapter", "transfer-mapping"]
    assert all("negative_transfer" in r for r in result.rows[1:])


# -- the real Food-Kitchen files ----------------------------------------------------------
def test_food_kitchen_tasks(shared_data):
    from migrec.data import load_amazon_food_kitchen

    data = load_amazon_food_kitchen(shared_data / "amazon-food-kitchen")
    kitchen = make_task(data, target="kitchen")
    food = make_task(data, target="food")
    assert (len(kitchen.valid), len(kitchen.test), len(food.valid), len(food.test)) == (597, 637, 363, 300)
    # 4,000 two-domain training users give their last event: 2,571 Kitchen and 1,429 Food cases more
    more_k, more_f = (make_task(data, target=t, extra_valid=4000) for t in ("kitchen", "food"))
    assert (len(more_k.valid), len(more_f.valid), len(more_k.test), len(more_f.test)) == (3168, 1792, 637, 300)
    assert all(np.array_equal(a, b) for a, b in zip(more_k.train.sequences, more_f.train.sequences))
    # both directions share the training data (so they can share fitted models)
    assert all(np.array_equal(a, b) for a, b in zip(kitchen.train.sequences, food.train.sequences))
    held = set(data.meta["heldout_users"]["valid"]) | set(data.meta["heldout_users"]["test"])
    idx = [i for i, u in enumerate(kitchen.train.user_ids) if u in held]
    assert len(idx) == 960 + 937 and all(len(kitchen.train.sequences[i]) == 0 for i in idx)
    assert kitchen.candidates.min() == 8661 and len(kitchen.candidates) == 27637
    assert pd.Series(kitchen.train.item_ids).is_unique


def test_transfer_command_prints_the_comparison(world, tmp_path, capsys):
    from migrec.cli import main

    data, _ = world
    data.to_parquet(str(tmp_path / "world"))   # no held-out lists on disk: leave-one-out in the target
    small = ["hidden=16", "layers=1", "heads=1", "max_len=20", "batch_size=16", "negatives=0", "experts=2",
             "device=\"cpu\""]
    main(["transfer", "--dataset", "parquet", "--path", str(tmp_path / "world"), "--source", "a", "--target", "b",
          "--models", "popularity,target-only,transfer-zero-shot,transfer-full", "--encoder", "hashing:32",
          "--cache", str(tmp_path / "cache"), "--epochs", "2", "--sampled", "10", "--out", str(tmp_path / "out"),
          *sum((["--param", p] for p in small), [])])
    out = capsys.readouterr().out
    assert "## a-to-b" in out and "transfer-full" in out and "vs target-only" in out
    saved = json.loads((tmp_path / "out" / "a-to-b.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["popularity", "target-only", "transfer-zero-shot", "transfer-full"]
    with pytest.raises(SystemExit, match="unknown domain"):
        main(["transfer", "--dataset", "parquet", "--path", str(tmp_path / "world"), "--source", "zz",
              "--target", "b"])


# -- the validated mix and paired intervals ---------------------------------------------------
def test_validated_mix_never_loses_to_its_base_on_validation(world, tmp_path):
    from migrec.transfer import ValidatedMix

    task = _task(world)
    bank = ModelBank(task.train, dict(epochs=8, use_id=False, **SMALL)).add_valid(task)
    base = DomainView(bank.interest(("b",)), task.target_mask, "target-only")
    other = bank.joint()
    kw = dict(candidates=task.candidates, beyond=False, segments=False)
    own = {name: evaluate(m, task.valid, task.train, ks=(10,), **kw).metrics["NDCG@10"]
           for name, m in (("base", base), ("other", other))}
    mix = ValidatedMix(base, other, candidates=task.candidates).fit(task.train, task.valid)
    ndcg = {float(w): v for w, v in mix.valid_ndcg_.items()}
    assert ndcg[0.0] == pytest.approx(own["base"]) and ndcg[1.0] == pytest.approx(own["other"])
    assert mix.weight_ == min(w for w, v in ndcg.items() if v == max(ndcg.values()))
    mixed = evaluate(mix, task.valid, task.train, ks=(10,), **kw).metrics["NDCG@10"]
    assert mixed == pytest.approx(max(ndcg.values())) and mixed >= own["base"] - 1e-12
    # the weight is what the scores use: a hand-made mix of the standardised scores ranks alike
    za, zb = mix._standardised(task.test.histories[:5])
    by_hand = za if mix.weight_ == 0 else zb if mix.weight_ == 1 else (1 - mix.weight_) * za + mix.weight_ * zb
    np.testing.assert_allclose(mix.score_histories(task.test.histories[:5]), by_hand, rtol=1e-5)
    mix.save(tmp_path / "mix")
    again = load_model(tmp_path / "mix")
    assert again.weight_ == mix.weight_
    np.testing.assert_allclose(again.score_histories(task.test.histories), mix.score_histories(task.test.histories))
    # items=: only those items' scores are mixed, every other item keeps the base model's
    some = np.asarray(task.candidates)[::2]
    part = ValidatedMix(base, other, candidates=task.candidates, items=some).fit(task.train, task.valid)
    assert part.valid_ndcg_["0.0"] == pytest.approx(own["base"])
    part.weight_ = 0.5                                     # whatever validation chose, the scores follow the rule
    za, zb = part._standardised(task.test.histories[:5])
    got = part.score_histories(task.test.histories[:5])
    rest = np.setdiff1d(np.arange(za.shape[1]), some)
    np.testing.assert_allclose(got[:, rest], za[:, rest], rtol=1e-5)
    np.testing.assert_allclose(got[:, some], 0.5 * za[:, some] + 0.5 * zb[:, some], rtol=1e-5)
    with pytest.raises(ValueError, match="validation cases"):
        ValidatedMix(base, other).fit(task.train, None)
    with pytest.raises(ValueError, match="grid must start at 0"):
        ValidatedMix(base, other, grid=(0.5, 1.0)).fit(task.train, task.valid)


def test_experiment_mixes_the_best_regime_and_reports_paired_intervals(world):
    from migrec.transfer.regimes import paired_difference

    task = _task(world)
    bank = ModelBank(task.train, dict(epochs=8, use_id=False, **SMALL)).add_valid(task)
    result = TransferExperiment(task, bank, models=["target-only", "transfer-zero-shot", "transfer-joint",
                                                    "transfer-mix", "transfer-mix+text"], sampled_negatives=10).run()
    rows = {r["model"]: r for r in result.rows}
    mix = rows["transfer-mix"]
    best = max(("transfer-zero-shot", "transfer-joint"), key=lambda n: rows[n]["metrics"]["valid:NDCG@10"])
    assert mix["mixed_with"] == best and 0.0 <= mix["mix_weight"] <= 1.0
    assert mix["metrics"]["valid:NDCG@10"] >= rows["target-only"]["metrics"]["valid:NDCG@10"] - 1e-12
    assert not mix["negative_transfer"]
    # text neighbours mixed into transfer-mix: never below it on validation, the weight from its own grid
    from migrec.transfer.regimes import TEXT_GRID

    text = rows["transfer-mix+text"]
    assert text["mix_weight"] in TEXT_GRID and text["mixed_with"].startswith(f"text-knn over transfer-mix ({best} at")
    assert text["metrics"]["valid:NDCG@10"] >= mix["metrics"]["valid:NDCG@10"] - 1e-12
    from migrec.models.text_knn import TextNeighbours

    blend, _, _ = TransferExperiment(task, bank, models=["transfer-zero-shot", "transfer-joint"]) \
        .build("transfer-mix+text")
    assert isinstance(blend.other, TextNeighbours) and blend.base.mixed_with_ == best
    assert set(blend.valid_ndcg_) == {str(w) for w in TEXT_GRID}
    assert blend.valid_ndcg_[str(blend.weight_)] == max(blend.valid_ndcg_.values()) == \
        pytest.approx(text["metrics"]["valid:NDCG@10"])
    for name in ("transfer-zero-shot", "transfer-joint", "transfer-mix"):
        m = rows[name]["metrics"]
        assert m["vs-target-only:NDCG@10"] == pytest.approx(m["NDCG@10"] - rows["target-only"]["metrics"]["NDCG@10"])
        assert m["vs-target-only:NDCG@10:lo95"] <= m["vs-target-only:NDCG@10"] <= m["vs-target-only:NDCG@10:hi95"]
    assert "vs-target-only:NDCG@10" not in rows["target-only"]["metrics"]
    assert "[95 % CI]" in result.to_markdown()
    # the interval: a constant difference has a zero-width interval; noise around 0 straddles it
    assert paired_difference([0.5] * 20, [0.25] * 20) == (0.25, 0.25, 0.25)
    rng = np.random.default_rng(1)
    a, b = rng.random(400), rng.random(400)
    diff, lo, hi = paired_difference(a, b, seed=3)
    assert lo < 0 < hi and diff == pytest.approx((a - b).mean())
    assert paired_difference(a, b, seed=3) == (diff, lo, hi)          # seeded: repeatable
    wide = paired_difference(a[:40], b[:40], seed=3)
    assert wide[2] - wide[1] > hi - lo                                # fewer cases, wider interval
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1.0, 2.0], [1.0])


def test_regimes_can_fine_tune_the_sentence_models_top_layer(world, tmp_path):
    """run_transfer(params={"text_layers": 1}): every interest model of the bank trains MiniLM's top layer
    (lower-layer states attached once), and fine-tuning a tuned source model accepts the target data."""
    from migrec.transfer.run import run_transfer

    data, _ = world
    params = dict(SMALL, epochs=2, use_id=False, text_layers=1, text_rows=8)
    result, = run_transfer(data, targets=["b"], models=["target-only", "transfer-full"], params=params,
                           encoder="st", cache_dir=None, sampled_negatives=10, save_dir=tmp_path)
    assert [r["model"] for r in result.rows] == ["target-only", "transfer-full"]
    manifests = [json.loads(p.read_text()) for p in tmp_path.glob("*/manifest.json")]
    assert len(manifests) == 3                    # target-only, the source model, its fine-tuned copy
    assert all("+tuned1:" in m["encoder"]["model_id"] for m in manifests)


# -- many-domain pre-training data (benchmarks/run_pretrain.py) ----------------------------
def test_combine_joins_every_parts_held_out_users(world):
    data, _ = world
    other = Dataset(make_interactions(["x", "x", "y", "y"], ["z1", "z2", "z1", "z2"], domain="c"),
                    make_catalogue(["z1", "z2"], ["zed", "zee"], domain="c"), "c", {"heldout_users": {"valid": ["x"]}})
    both = combine(data, other)
    assert both.meta["heldout_users"]["valid"] == data.meta["heldout_users"]["valid"] + ["x"]
    assert both.meta["heldout_users"]["test"] == data.meta["heldout_users"]["test"]
    assert data.meta["heldout_users"]["valid"][-1] != "x"        # the part's own list is left alone


def test_sample_users_draws_single_domain_users_per_domain(world):
    data, _ = world
    inter = data.interactions
    only_a = sorted(u for u, d in inter.groupby("user_id")["domain"].agg(set).items() if d == {"a"})
    sampled = sample_users(data, per_domain=5, domains=["a"], seed=1)
    users_a = set(sampled.interactions.loc[sampled.interactions["domain"] == "a", "user_id"])
    assert len(users_a) == 5 and users_a <= set(only_a)     # only users of domain a alone, 5 of them
    b_events = inter[inter["domain"] == "b"]
    kept_b = sampled.interactions[sampled.interactions["domain"] == "b"]
    assert len(kept_b) == len(b_events)                      # domain b is not named: all its events stay
    used = set(sampled.interactions["item_id"])
    assert set(sampled.catalogue.loc[sampled.catalogue["domain"] == "a", "item_id"]) <= used
    assert len(sampled.catalogue[sampled.catalogue["domain"] == "b"]) == 20
    assert sample_users(data, 5, ["a"], seed=1).interactions.equals(sampled.interactions)
    assert set(sample_users(data, 5, ["a"], seed=2).interactions["user_id"]) != set(sampled.interactions["user_id"])
    assert sampled.meta["heldout_users"]["valid"] == [u for u in data.meta["heldout_users"]["valid"]
                                                      if u in set(sampled.interactions["user_id"])]
    with pytest.raises(ValueError, match="no events in domain"):
        sample_users(data, 5, ["nope"])


def test_held_out_source_users_validate_pre_training_without_leaking_into_it(world):
    data, _ = world
    plain = Dataset(data.interactions, data.catalogue, "plain")        # b has no held-out users: leave-one-out
    held = hold_out_users(plain, ["a"], valid=4, seed=0)
    names = held.meta["heldout_users"]["valid"]
    assert len(names) == 4 and all(u.startswith("a:") for u in names)   # users of domain a alone
    target = make_task(held, target="b", cold_item_share=0.0)          # the target: leave-one-out within b
    source = make_task(held, target="a", cold_item_share=0.0)          # the source: its held-out users
    assert len(target.valid) > 0 and "leave-one-out" in target.protocol
    assert len(source.valid) == 4 and len(source.test) == 0 and "held-out" in source.protocol
    index = {u: i for i, u in enumerate(target.train.user_ids)}
    for u, hist in zip(source.valid.users, source.valid.histories):
        assert target.train.user_ids[u] in names and len(target.train.sequences[u]) == 0   # never trains
        full = plain.interactions[plain.interactions["user_id"] == target.train.user_ids[u]]
        assert len(hist) + 1 == len(full)                                  # last event = the target
    assert all(len(target.train.sequences[index[u]]) for u in index if u.startswith("a:") and u not in names)
    with pytest.raises(ValueError, match="fewer than"):
        hold_out_users(plain, ["a"], valid=1000)


def test_pretrain_overrides_give_the_transfer_regimes_a_source_model_of_their_own(world, tmp_path, counted):
    task = _task(world)
    bank = ModelBank(task.train, dict(SMALL, epochs=3, use_id=True), pretrain={"id_dropout": 0.5},
                     save_dir=tmp_path).add_valid(task)
    experiment = TransferExperiment(task, bank, models=["target-only", "transfer-zero-shot", "transfer-full"],
                                    sampled_negatives=10)
    zero, seconds, _ = experiment.build("transfer-zero-shot")
    key = ("pretrain", ("a",), "id_dropout=0.5")
    assert bank.pretrained_key(["a"]) == key and zero is bank.models[key]
    assert zero.id_dropout == 0.5 and zero.use_id and counted == {"fit": 1, "fine_tune": 0}
    assert seconds == pytest.approx(bank.costs[key][0])
    plain = bank.interest(("a",))                       # the shared single-domain model keeps the bank's params
    assert plain is not zero and plain.id_dropout == 0.0 and counted["fit"] == 2
    full, seconds, _ = experiment.build("transfer-full")
    assert counted == {"fit": 2, "fine_tune": 1} and full.id_dropout == 0.5
    assert seconds == pytest.approx(bank.costs[key][0] + bank.costs[bank.fine_tune_key(task, "all")][0])
    assert bank.fine_tune_key(task, "all") == ("fine-tune", ("a",), "id_dropout=0.5", "b", "all")
    assert {"pretrain_a_id_dropout=0.5", "fine-tune_a_id_dropout=0.5_b_all"} <= {p.name for p in tmp_path.iterdir()}
    hists = task.test.histories[:6]
    assert not np.allclose(zero.score_histories(hists), plain.score_histories(hists))
    # an override may switch off what the bank otherwise always builds (the per-domain adapters)
    plain_source = ModelBank(task.train, dict(SMALL, epochs=1, use_id=True), pretrain={"domain_adapters": False})
    assert plain_source.add_valid(task).pretrained(("a",)).domain_adapters is False
    # without overrides the source model is the shared one (one fit serves both directions)
    shared = ModelBank(task.train, dict(SMALL, epochs=3, use_id=True)).add_valid(task)
    assert shared.pretrained(("a",)) is shared.interest(["a"])


def test_zero_shot_text_regime_chooses_its_weight_on_the_source_domain_only(world):
    from migrec.models.text_knn import TextNeighbours
    from migrec.transfer import ValidatedMix

    task = _task(world)                                    # target b, source a
    bank = ModelBank(task.train, dict(epochs=3, use_id=False, **SMALL)).add_valid(task)
    experiment = TransferExperiment(task, bank, ["transfer-zero-shot", "transfer-zero-shot+text"])
    with pytest.raises(ValueError, match="source domains' validation cases"):
        experiment.build("transfer-zero-shot+text")        # only the target's validation cases are registered
    bank.add_valid(_task(world, target="a"))
    mix, seconds, _ = experiment.build("transfer-zero-shot+text")
    assert mix.base is bank.pretrained(("a",)) and isinstance(mix.other, TextNeighbours) and seconds > 0
    assert mix.mixed_with_ == "text-knn over transfer-zero-shot (weight chosen on a, scored as a new domain)"
    assert mix.base.as_new_domain is False                 # the target is scored by the model as trained
    # the weight is the one a mix fitted on the source's validation cases (source items ranked, every item
    # scored as a new domain's: shared adapter alone) picks
    probe = mix.base.clone().set_params(as_new_domain=True)
    by_hand = ValidatedMix(probe, mix.other, candidates=np.flatnonzero(task.source_mask)) \
        .fit(task.train, bank.valid_for(["a"]))
    assert mix.weight_ == by_hand.weight_ and mix.valid_ndcg_ == by_hand.valid_ndcg_
    as_trained = ValidatedMix(mix.base, mix.other, candidates=np.flatnonzero(task.source_mask)) \
        .fit(task.train, bank.valid_for(["a"]))
    assert as_trained.valid_ndcg_ != by_hand.valid_ndcg_    # the probe ranks the source differently
    hists = task.test.histories[:4]                         # switched back on the fitted clone: no refit needed
    np.testing.assert_allclose(probe.set_params(as_new_domain=False).score_histories(hists),
                               mix.base.score_histories(hists), rtol=1e-5)
    # and it ranks the target domain's items: finite scores there, -inf on the source's
    scores = mix.score_histories(task.test.histories[:5])
    assert np.array_equal(mix.candidates, task.candidates)
    assert np.isfinite(scores[:, task.candidates]).all() and np.isneginf(scores[:, task.source_mask]).all()
    row = {r["model"]: r for r in TransferExperiment(task, bank, ["target-only", "transfer-zero-shot+text"]).run().rows}
    assert row["transfer-zero-shot+text"]["mix_weight"] == mix.weight_
