"""The input-free floor of each task (great_tf/mtl/floors.py), by hand and against the Keras metrics
the trainers report."""

from dataclasses import dataclass

import keras
import numpy as np
import pytest

from great_tf.mtl.floors import input_free_metrics
from great_tf.mtl.tasks import Task

TASKS = (Task("class", "classification", 3), Task("edges", "regression", 1, label="edge"))


def test_floors_by_hand():
    train = {"class": np.array([0, 1, 1, 2]), "edges": np.array([[[0.0], [2.0]], [[2.0], [4.0]]])}
    test = {"class": np.array([1, 0, 2, 1]), "edges": np.array([[[1.0], [5.0]]])}
    floors = input_free_metrics(TASKS, train, test)
    # Majority class 1: two of four wrong. Mean map (1, 3) against (1, 5): sqrt((0 + 4) / 2).
    assert floors == pytest.approx({"class error %": 50.0, "edge RMSE": np.sqrt(2.0)})


def test_floors_equal_the_trainers_metrics_of_the_constant_prediction():
    rng = np.random.default_rng(0)
    train = {"class": rng.integers(0, 3, 50), "edges": rng.random((50, 4, 4, 1)).astype(np.float32)}
    test = {"class": rng.integers(0, 3, 20), "edges": rng.random((20, 4, 4, 1)).astype(np.float32)}
    floors = input_free_metrics(TASKS, train, test)
    metrics = {t.name: t.make_metrics()[0] for t in TASKS}
    majority = np.bincount(train["class"]).argmax()
    metrics["class"].update_state(test["class"], np.eye(3)[np.full(20, majority)])
    metrics["edges"].update_state(test["edges"], np.broadcast_to(train["edges"].mean(0), test["edges"].shape))
    assert floors["class error %"] == pytest.approx(float(metrics["class"].result()), abs=1e-4)
    assert floors["edge RMSE"] == pytest.approx(float(metrics["edges"].result()), rel=1e-5)


@dataclass(frozen=True)
class MaskedTask(Task):
    def make_metrics(self):
        return [keras.metrics.MeanAbsoluteError(name=f"{self.name}_mae")]


def test_tasks_with_metrics_of_their_own_are_left_out():
    train = {"class": np.array([0, 0]), "depth": np.zeros((2, 1))}
    floors = input_free_metrics((TASKS[0], MaskedTask("depth", "regression", 1)), train, train)
    assert floors == {"class error %": 0.0}


def test_the_report_line_formats_each_floor_or_is_left_out(monkeypatch):
    from great_tf import evidence_report
    from great_tf.errors import GreatError
    from great_tf.mtl import floors

    monkeypatch.setattr(floors, "benchmark_floors", lambda name: {"class error %": 90.95, "edge RMSE": 0.43447})
    (line, _) = evidence_report.floor_lines({"edge RMSE": ".4f"})
    assert "class error 90.95 %, edge RMSE 0.4345." in line

    def missing(name):
        raise GreatError("data set 'cifar10' is not here")

    monkeypatch.setattr(floors, "benchmark_floors", missing)
    assert evidence_report.floor_lines({}) == []
