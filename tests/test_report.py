"""benchmarks/_report.py: a results file that keeps rows of models a run did not re-run says which
machine made which rows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _report  # noqa: E402


def _row(model, ndcg):
    return {"model": model, "metrics": {"NDCG@10": ndcg}, "train_seconds": 1.0, "peak_rss_mb": 10.0}


def test_each_machine_is_named_once_with_the_rows_it_made(tmp_path, monkeypatch):
    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    doc = {"dataset": "d", "protocol": "p", "command": "run A"}
    _report.write_json({**doc, "machine": "Zen 4; CPU flags: avx512_bf16", "rows": [_row("a", 0.1), _row("b", 0.2),
                                                                                  _row("c", 0.3)]})
    _report.write_json({**doc, "command": "run B", "machine": "Zen 3", "rows": [_row("b", 0.25)]})
    first = json.loads((tmp_path / "d.json").read_text())
    assert first["machine"] == "rows a, c: Zen 4; CPU flags: avx512_bf16 | rows b: Zen 3"
    assert [r["model"] for r in first["rows"]] == ["a", "c", "b"] and first["command"] == "run A ; then run B"
    # a run that writes after every row (run_scaling) names its command once, however often it writes
    _report.write_json({**doc, "command": "run B", "machine": "Zen 3", "rows": [_row("b", 0.26)]})
    assert json.loads((tmp_path / "d.json").read_text())["command"] == "run A ; then run B"
    # a third run on a third machine replaces b's and a's rows: Zen 3 made no row any more
    _report.write_json({**doc, "command": "run C", "machine": "Zen 5", "rows": [_row("a", 0.15), _row("b", 0.3)]})
    third = json.loads((tmp_path / "d.json").read_text())
    assert third["machine"] == "rows c: Zen 4; CPU flags: avx512_bf16 | rows a, b: Zen 5"
    assert _report.row_machines(third["machine"], ["a", "b", "c"]) == {
        "a": "Zen 5", "b": "Zen 5", "c": "Zen 4; CPU flags: avx512_bf16"}
    # every row re-run on one machine: the plain machine again
    _report.write_json({**doc, "command": "run D", "machine": "Zen 5", "rows": [_row("c", 0.3)]})
    assert json.loads((tmp_path / "d.json").read_text())["machine"] == "Zen 5"


def test_older_nested_machine_strings_are_read():
    nested = "rows x: M1 | earlier rows: rows y: M2 | earlier rows: M3"
    assert _report.row_machines(nested, ["x", "y", "z"]) == {"x": "M1", "y": "M2", "z": "M3"}


def test_table_cells_keep_four_decimals_below_100_and_one_from_100_up():
    assert [_report._cell(v) for v in (0.07735, 99.99994, 681.0, 3805.5, -1326.8633)] == \
        ["0.0774", "99.9999", "681.0", "3805.5", "-1326.9"]
    assert _report._cell(None) == "n/a" and _report._cell(12) == "12"
    assert [_report._cell(v, 0) for v in (856.1, 12.6)] == ["856", "13"] and _report._cell(1058.23, 1) == "1058.2"
