"""The `migrec` command end to end on real MovieLens-100K, with small fast settings."""
import json
import re
import shutil

import numpy as np
import pytest

from migrec.cli import main, parse_value

FAST = ["--encoder", "hashing:64", "--epochs", "1", "--device", "cpu",
        "--param", "interest-text+id.hidden=16", "--param", "interest-text+id.max_len=20",
        "--param", "interest-text+id.layers=1", "--param", "interest-text+id.progress=false"]
RANKED = re.compile(r"^\s+\d+\.\s+(\S+)\s", re.M)   # "   1.      300  Air Force One (1997)   score ..."


@pytest.fixture(scope="module")
def ml100k(shared_data):
    path = shared_data / "ml-100k"
    if not path.exists():
        pytest.skip("ml-100k not in shared data")
    return str(path)


@pytest.fixture(scope="module")
def model_dir(ml100k, tmp_path_factory):
    """One small interest model trained by `migrec train` (about half a minute), shared by the tests."""
    root = tmp_path_factory.mktemp("cli")
    main(["train", "--dataset", "ml-100k", "--path", ml100k, "--model", "interest-text+id",
          "--out", str(root / "model"), "--cache", str(root / "cache")] + FAST)
    return root / "model"


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in ("prepare", "encode", "train", "evaluate", "recommend", "transfer", "interests", "demo"):
        assert command in text


# NDCG@10 on ML-100K leave-one-out (test), full ranking: deterministic models, measured once
KNOWN = {("popularity", "exclude"): 0.0448846, ("itemknn", "exclude"): 0.0539524,
         ("popularity", "allow"): 0.0224088}


def library_ndcg(ml100k, name, repeats="exclude"):
    """The library's own figure for what the CLI ran: same split, same model, evaluate()."""
    from migrec import pipeline
    from migrec.evaluation import evaluate

    split = pipeline.prepare_split(pipeline.load_dataset("ml-100k", ml100k), encoder=None)
    model = pipeline.build_model(name).fit(split.train, split.valid)
    return evaluate(model, split.test, split.train, ks=(10,), repeats=repeats).metrics["NDCG@10"]


def test_evaluate_writes_table_json_and_chart(ml100k, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["evaluate", "--dataset", "ml-100k", "--path", ml100k, "--models", "popularity,itemknn",
          "--k", "10", "--out", str(out), "--cache", str(tmp_path / "cache")] + FAST)
    payload = json.loads((out / "results.json").read_text())
    assert set(payload) == {"dataset", "protocol", "repeats", "machine", "command", "rows"}
    assert payload["repeats"] == "exclude" and "repeats=exclude" in payload["protocol"]
    assert [r["model"] for r in payload["rows"]] == ["popularity", "itemknn"]
    for row in payload["rows"]:
        ndcg = row["metrics"]["NDCG@10"]
        assert ndcg == pytest.approx(library_ndcg(ml100k, row["model"]), rel=1e-9)
        assert ndcg == pytest.approx(KNOWN[row["model"], "exclude"], abs=1e-6)
    assert (out / "comparison.png").stat().st_size > 1000
    assert "| itemknn |" in capsys.readouterr().out
    # the policy flag reaches the evaluator and the file
    main(["evaluate", "--dataset", "ml-100k", "--path", ml100k, "--models", "popularity", "--repeats", "allow",
          "--k", "10", "--out", str(tmp_path / "allow"), "--cache", str(tmp_path / "cache")] + FAST)
    payload = json.loads((tmp_path / "allow" / "results.json").read_text())
    assert payload["repeats"] == "allow" and "repeats=allow" in payload["protocol"]
    assert payload["rows"][0]["metrics"]["NDCG@10"] == pytest.approx(KNOWN["popularity", "allow"], abs=1e-6)


def test_train_writes_model_catalogue_and_a_data_pointer(model_dir, ml100k):
    from pathlib import Path

    assert sorted(p.name for p in model_dir.iterdir()) == ["arrays.safetensors", "catalogue.parquet",
                                                           "data.json", "manifest.json"]
    # data.json points at the data set (to find histories again); it holds no user data
    assert json.loads((model_dir / "data.json").read_text()) == {"dataset": "ml-100k",
                                                                 "path": str(Path(ml100k).resolve())}
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["registry"] and len(manifest["item_ids"]) == 1682   # every ML-100K film
    assert manifest["training"]["users"] == 943


def test_recommend_for_a_user_of_the_data_set(model_dir, capsys):
    from migrec.data import Histories, load_movielens_100k
    from migrec.registry import load_model

    capsys.readouterr()
    main(["recommend", "--model-dir", str(model_dir), "--user", "1", "-k", "5"])
    text = capsys.readouterr().out
    assert "User 1: 272 events; most recent 10:" in text      # user 1 rated 272 films in ML-100K
    assert "Top-5 recommendations" in text
    assert "(1995)" in text or "(1996)" in text or "(1994)" in text  # MovieLens titles, not bare ids
    assert "Why #1" in text and "empty-history score" in text
    shown = RANKED.findall(text)
    # the same top-5 as the library gives for user 1's whole history, none of it already seen
    data = load_movielens_100k(json.loads((model_dir / "data.json").read_text())["path"])
    history = Histories.from_frame(data.interactions)["1"]
    ids, _ = load_model(model_dir).recommend_history(history, k=5)
    assert shown == list(ids) and len(shown) == 5
    assert not set(shown) & set(history)


def test_recommend_for_a_history_typed_in(model_dir, capsys):
    from migrec.registry import load_model

    capsys.readouterr()
    main(["recommend", "--model-dir", str(model_dir), "--history", "50,181", "-k", "3", "--no-explain"])
    text = capsys.readouterr().out
    assert "Given history: 2 events" in text
    assert "Star Wars (1977)" in text and "Return of the Jedi (1983)" in text
    assert "Why #1" not in text
    shown = RANKED.findall(text)
    ids, scores = load_model(model_dir).recommend_history(["50", "181"], k=3)
    assert shown == list(ids) and not {"50", "181"} & set(shown)
    assert np.all(np.diff(scores) <= 0)


def test_recommend_errors_name_what_is_wrong(model_dir, tmp_path, ml100k, capsys):
    with pytest.raises(SystemExit, match=r"--user '99999': no such user in the ml-100k data set"):
        main(["recommend", "--model-dir", str(model_dir), "--user", "99999"])
    with pytest.raises(SystemExit, match="--history: unknown item zz"):
        main(["recommend", "--model-dir", str(model_dir), "--history", "50,zz"])
    # without data.json the data set must be named; --dataset/--path then work
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    (copy / "data.json").unlink()
    with pytest.raises(SystemExit, match="data.json is missing"):
        main(["recommend", "--model-dir", str(copy), "--user", "1"])
    capsys.readouterr()
    main(["recommend", "--model-dir", str(copy), "--user", "1", "--dataset", "ml-100k", "--path", ml100k,
          "-k", "2", "--no-explain"])
    assert len(RANKED.findall(capsys.readouterr().out)) == 2
    # a folder saved by an earlier migrec (pickled model.json format) is refused: retrain
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.json").write_text(json.dumps({"class": "migrec.models.interest.InterestModel"}))
    with pytest.raises(SystemExit, match="retrain"):
        main(["recommend", "--model-dir", str(old), "--user", "1"])


def test_unknown_model_is_a_clear_error(ml100k):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "ml-100k", "--path", ml100k, "--model", "nope", "--out", "x"])
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        main(["evaluate", "--dataset", "ml-100k", "--path", ml100k, "--models", "popularity,nope"])


def test_demo_runs_end_to_end(ml100k, tmp_path, capsys, monkeypatch):
    """The quick demo: all seven models, table, chart, one user's history, top-10 and why."""
    from migrec.cli import demo
    from migrec.evaluation import evaluate

    ran = {}
    real = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", lambda **kw: ran.setdefault("demo", real(**kw)))
    main(["demo", "--data", ml100k, "--quick", "--encoder", "hashing:64", "--out", str(tmp_path / "demo"),
          "--cache", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    payload = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["model"] for r in payload["rows"]] == ["popularity", "itemknn", "als", "bpr", "sasrec",
                                                     "interest-text", "interest-text+id"]
    # every written figure is the library's evaluate() of the demo's fitted model on the test split
    split, models = ran["demo"]["split"], ran["demo"]["models"]
    for row in payload["rows"]:
        want = evaluate(models[row["model"]], split.test, split.train, ks=(10,), beyond=False, segments=False)
        assert row["metrics"]["NDCG@10"] == pytest.approx(want.metrics["NDCG@10"], rel=1e-9), row["model"]
    assert payload["rows"][0]["metrics"]["NDCG@10"] == pytest.approx(KNOWN["popularity", "exclude"], abs=1e-6)
    assert "Top-10 recommendations" in text and "most recent" in text and "Why #1" in text
    assert len(RANKED.findall(text)) == 10
    assert "[interest migration]" in text


def test_train_fine_tunes_the_sentence_models_top_layer_when_asked(ml100k, tmp_path, capsys):
    """`--param <model>.text_layers=1`: the CLI hands the model the lower layers' states; the saved
    model's vectors are the tuned ones, under the tuned encoder's id."""
    from migrec.encoders import make_encoder

    fast = [a.replace("hashing:64", "st") for a in FAST]
    main(["train", "--dataset", "ml-100k", "--path", ml100k, "--model", "interest-text+id", "--out",
          str(tmp_path / "tuned"), "--cache", str(tmp_path / "cache"), "--param", "interest-text+id.text_layers=1",
          "--param", "interest-text+id.batch_size=512"] + fast)
    manifest = json.loads((tmp_path / "tuned" / "manifest.json").read_text())
    assert manifest["params"]["text_layers"] == 1
    assert manifest["encoder"]["model_id"].startswith(make_encoder("st").model_id + "+tuned1:")
    assert manifest["encoder"]["tuned_from"] == make_encoder("st").model_id


def test_param_values_read_json_and_pythons_true_false_none():
    # `--param interest.use_id=False` must switch the ID part off, not pass the truthy string "False"
    assert parse_value("False") is False and parse_value("True") is True and parse_value("None") is None
    assert parse_value("false") is False and parse_value("0.5") == 0.5 and parse_value("3") == 3
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("st") == "st" and parse_value('"False"') == "False"    # JSON quotes keep the word
