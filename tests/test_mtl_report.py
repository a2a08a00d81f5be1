"""Δm, mean ± std over seeds and the comparison tables (great_tf/mtl/report.py), against hand
computations."""

import csv
import json

import numpy as np
import pytest

from great_tf.errors import GreatError
from great_tf.mtl import CIFAR10_NOISY_TASKS, HIGHER, LOWER
from great_tf.mtl import report
from great_tf.mtl.nyuv2_tasks import NYUV2_TASKS


def test_delta_m_by_hand():
    directions = {"err %": LOWER, "rmse": LOWER, "acc %": HIGHER}
    baseline = {"err %": 10.0, "rmse": 0.5, "acc %": 80.0}
    row = {"err %": 9.0, "rmse": 0.6, "acc %": 84.0}
    # err: 10 % lower (+0.1); rmse: 20 % higher, worse (-0.2); acc: 5 % higher, better (+0.05).
    assert report.delta_m(row, baseline, directions) == pytest.approx(100 * (0.1 - 0.2 + 0.05) / 3)
    assert report.delta_m(baseline, baseline, directions) == 0.0
    # Every metric better by 10 % is +10 %, worse by 10 % is -10 %.
    better = {"err %": 9.0, "rmse": 0.45, "acc %": 88.0}
    worse = {"err %": 11.0, "rmse": 0.55, "acc %": 72.0}
    assert report.delta_m(better, baseline, directions) == pytest.approx(10.0)
    assert report.delta_m(worse, baseline, directions) == pytest.approx(-10.0)


def libmtl_count_improvement(base_result, new_result, weight):
    """LibMTL's `count_improvement` (weight 1: higher is better), written from its formula:
    per task, the mean over its metrics of (-1)^w (base - new) / base; then the mean over tasks."""
    improvement = 0.0
    for task in base_result:
        improvement += np.mean((-1.0) ** np.array(weight[task])
                               * (np.array(base_result[task]) - np.array(new_result[task]))
                               / np.array(base_result[task]))
    return improvement / len(base_result)


def test_delta_m_is_libmtls_count_improvement_with_one_metric_per_task():
    directions = report.column_directions(CIFAR10_NOISY_TASKS)
    assert directions == {"class error %": LOWER, "colour RMSE": LOWER, "edge RMSE": LOWER,
                          "auto RMSE": LOWER}
    baseline = {"class error %": 24.0, "colour RMSE": 0.131, "edge RMSE": 0.349, "auto RMSE": 0.113}
    row = {"class error %": 24.2, "colour RMSE": 0.114, "edge RMSE": 0.252, "auto RMSE": 0.087}
    columns = list(directions)
    libmtl = libmtl_count_improvement({c: [baseline[c]] for c in columns},
                                      {c: [row[c]] for c in columns}, {c: [0] for c in columns})
    assert report.delta_m(row, baseline, directions) == pytest.approx(100 * libmtl)


def test_delta_m_averages_every_metric_of_tasks_with_several():
    """NYUv2: depth has 3 metrics (lower is better), normals 6 (three of them higher is better):
    Δm is the mean over the 9 metrics, each signed by its own direction."""
    directions = report.column_directions(NYUV2_TASKS)
    assert len(directions) == 9
    assert directions["normals <30° %"] == HIGHER and directions["normals mean °"] == LOWER
    baseline = {c: 2.0 for c in directions}
    row = {c: 2.2 for c in directions}  # every metric 10 % higher
    higher = sum(d == HIGHER for d in directions.values())
    assert higher == 3
    expected = 100 * 0.1 * (higher - (9 - higher)) / 9
    assert report.delta_m(row, baseline, directions) == pytest.approx(expected)


def test_delta_m_refuses_what_it_cannot_compute():
    with pytest.raises(GreatError, match="baseline of 'a' is 0"):
        report.delta_m({"a": 1.0}, {"a": 0.0}, {"a": LOWER})
    with pytest.raises(GreatError, match="needs 'b'"):
        report.delta_m({"a": 1.0}, {"a": 1.0, "b": 2.0}, {"a": LOWER, "b": LOWER})
    with pytest.raises(GreatError, match="direction 'up'"):
        report.delta_m({"a": 1.0}, {"a": 1.0}, {"a": "up"})


def test_mean_and_sample_std():
    values = [1.0, 2.0, 4.0]
    mean, std = report.mean_and_std(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert report.mean_and_std([3.0]) == (3.0, None)
    assert report.mean_and_std([None, "x"]) == (None, None)


def seed_rows():
    directions = {"err %": LOWER, "acc %": HIGHER}
    rows = [
        {"method": "single", "seed": 0, "err %": 10.0, "acc %": 80.0, "train s": 5.0},
        {"method": "single", "seed": 1, "err %": 12.0, "acc %": 84.0, "train s": 7.0},
        {"method": "a", "seed": 0, "err %": 11.0, "acc %": 90.0, "train s": 3.0},
        {"method": "a", "seed": 1, "err %": 13.0, "acc %": 86.0, "train s": 4.0},
        {"method": "b", "seed": 0, "err %": 9.0, "acc %": 70.0, "train s": 3.5},
        {"method": "b", "seed": 1, "err %": 9.0, "acc %": 74.0, "train s": 3.5},
    ]
    return rows, directions


def test_delta_m_of_every_seed_is_against_the_mean_single_task_baseline():
    rows, directions = seed_rows()
    scored, problem = report.add_delta_m(rows, directions)
    base = {"err %": 11.0, "acc %": 82.0}  # the single rows' mean
    for row in scored:
        assert row[report.DELTA_M] == pytest.approx(report.delta_m(row, base, directions))
    singles = [r[report.DELTA_M] for r in scored if r["method"] == "single"]
    assert np.mean(singles) == pytest.approx(0.0) and problem is None
    without, problem = report.add_delta_m(rows[2:], directions)
    assert [r[report.DELTA_M] for r in without] == [None] * 4 and problem == "no 'single' rows"
    zero = [{**r, "acc %": 0.0} if r["method"] == "single" else r for r in rows]
    scored, problem = report.add_delta_m(zero, directions)  # a baseline of 0: no Δm, and why
    assert {r[report.DELTA_M] for r in scored} == {None} and "baseline of 'acc %' is 0" in problem


def test_summary_rows_are_mean_and_std_per_method_sorted_by_delta_m():
    rows, directions = seed_rows()
    scored, _ = report.add_delta_m(rows, directions)
    columns = ["err %", "acc %", report.DELTA_M, "train s"]
    summary = report.sort_by_delta_m(report.summarize(scored, columns))
    deltas = {m: [r[report.DELTA_M] for r in scored if r["method"] == m] for m in ("single", "a", "b")}
    assert [r["method"] for r in summary] == sorted(deltas, key=lambda m: -np.mean(deltas[m]))
    a = next(r for r in summary if r["method"] == "a")
    assert a["seeds"] == 2 and a["err %"] == 12.0 and a["err % std"] == pytest.approx(np.sqrt(2.0))
    assert a[report.DELTA_M + report.STD] == pytest.approx(np.std(deltas["a"], ddof=1))
    one_seed = report.summarize([rows[0]], columns)
    assert "err % std" not in one_seed[0]


def test_a_column_with_a_bar_does_not_break_the_markdown_table(tmp_path):
    rows = [{"method": "a", "seed": 0, "1-|cos|": 0.5}]
    text, _ = report.write_comparison(str(tmp_path / "t"), rows, ["method", "1-|cos|"], "T")
    assert "| method | 1-\\|cos\\| |" in text and "| a | 0.5 |" in text


def test_written_tables_hold_mean_std_and_the_per_seed_rows(tmp_path):
    rows, directions = seed_rows()
    scored, _ = report.add_delta_m(rows, directions)
    columns = ["method", "err %", "acc %", report.DELTA_M, "train s"]
    stem = str(tmp_path / "table")
    text, summary = report.write_comparison(stem, scored, columns, "T", ["a note"],
                                            {"err %": ".2f", report.DELTA_M: ".2f"})
    assert "| a | 12.00 ± 1.41 |" in text and "a note" in text
    md = (tmp_path / "table.md").read_text()
    # Δm: b +3.0 (seeds +1.8, +4.2), single 0, a -0.9 (+4.9, -6.7); best first.
    assert md.index("| b |") < md.index("| single |") < md.index("| a |")
    with open(tmp_path / "table.csv", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert [(r["method"], r["seed"]) for r in written] == [(r["method"], str(r["seed"])) for r in rows]
    assert float(written[2]["err %"]) == 11.0
    table = json.loads((tmp_path / "table.json").read_text(encoding="utf-8"))
    assert table["columns"] == columns and [r["method"] for r in table["rows"]] == ["b", "single", "a"]
    assert len(table["seed_rows"]) == 6 and table["rows"] == summary
