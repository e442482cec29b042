"""The `migrec` command end to end on real MovieLens-100K, with small fast settings."""
import json

import pytest

from migrec.cli import main

FAST = ["--encoder", "hashing:64", "--epochs", "1", "--device", "cpu",
        "--param", "interest-text+id.hidden=16", "--param", "interest-text+id.max_len=20",
        "--param", "interest-text+id.layers=1", "--param", "interest-text+id.progress=false"]


@pytest.fixture
def ml100k(shared_data):
    path = shared_data / "ml-100k"
    if not path.exists():
        pytest.skip("ml-100k not in shared data")
    return str(path)


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in ("prepare", "encode", "train", "evaluate", "recommend", "demo"):
        assert command in text


def test_evaluate_writes_table_json_and_chart(ml100k, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["evaluate", "--dataset", "ml-100k", "--path", ml100k, "--models", "popularity,itemknn",
          "--k", "10", "--out", str(out), "--cache", str(tmp_path / "cache")] + FAST)
    payload = json.loads((out / "results.json").read_text())
    assert set(payload) == {"dataset", "protocol", "machine", "command", "rows"}
    assert [r["model"] for r in payload["rows"]] == ["popularity", "itemknn"]
    pop, knn = (r["metrics"]["NDCG@10"] for r in payload["rows"])
    assert 0.0 < pop < knn < 1.0  # item-kNN beats popularity on ML-100K
    assert (out / "comparison.png").stat().st_size > 1000
    assert "| itemknn |" in capsys.readouterr().out


def test_train_then_recommend_shows_titles_and_explanation(ml100k, tmp_path, capsys):
    model_dir = tmp_path / "model"
    main(["train", "--dataset", "ml-100k", "--path", ml100k, "--model", "interest-text+id",
          "--out", str(model_dir), "--cache", str(tmp_path / "cache")] + FAST)
    capsys.readouterr()
    main(["recommend", "--model-dir", str(model_dir), "--user", "1", "-k", "5"])
    text = capsys.readouterr().out
    assert "Top-5 recommendations" in text
    assert "(1995)" in text or "(1996)" in text or "(1994)" in text  # MovieLens titles, not bare ids
    assert "Why #1" in text and "empty-history score" in text


def test_unknown_model_is_a_clear_error(ml100k):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "ml-100k", "--path", ml100k, "--model", "nope", "--out", "x"])


def test_demo_runs_end_to_end(ml100k, tmp_path, capsys):
    """The quick demo: all seven models, table, chart, one user's history, top-10 and why."""
    main(["demo", "--data", ml100k, "--quick", "--encoder", "hashing:64", "--out", str(tmp_path / "demo"),
          "--cache", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    payload = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["model"] for r in payload["rows"]] == ["popularity", "itemknn", "als", "bpr", "sasrec",
                                                     "interest-text", "interest-text+id"]
    assert all(0.0 <= r["metrics"]["NDCG@10"] <= 1.0 for r in payload["rows"])
    assert "Top-10 recommendations" in text and "most recent" in text and "Why #1" in text
