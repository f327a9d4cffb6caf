"""Each deterministic tutorial recipe, run through deepbasics, against the tutorial's own plain loop."""

import numpy as np
import pytest
import torch

from conftest import RECIPES, column, compose_experiment, compose_train, diabetes, read_metrics
from deepbasics.run.training import train


@pytest.mark.parametrize("experiment", RECIPES)
def test_recipe_equals_the_tutorial_loop(experiment, tmp_path, diabetes_csv):
    cfg = compose_experiment(experiment, run_dir=tmp_path)
    train(cfg)
    W, b, predictions = RECIPES[experiment]()

    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    assert checkpoint["global_step"] == cfg.epochs
    torch.testing.assert_close(state["net.linear.weight"], W.T, rtol=0, atol=1e-5)
    torch.testing.assert_close(state["net.linear.bias"], b, rtol=0, atol=1e-5)

    from deepbasics.models.lightning_modules import BinaryClassifier, RegressionModule

    module_cls = BinaryClassifier if experiment.startswith("logistic") else RegressionModule
    module = module_cls.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    x = {"logistic_diabetes": lambda: diabetes()[0]}.get(experiment, lambda: None)()
    if x is None:
        x = column(cfg.data.train.x)
    with torch.no_grad():
        torch.testing.assert_close(module.predictions(module(x)), predictions, rtol=0, atol=1e-5)


def test_least_squares_gap_is_reported(tmp_path):
    train(compose_train("experiment=linear_study_hours", run_dir=tmp_path))
    optimum = read_metrics(tmp_path)["optimum"]
    x = np.arange(1, 10, dtype=float)
    y = np.array([11, 22, 33, 44, 53, 66, 77, 87, 95], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    assert optimum["method"] == "least squares"
    assert optimum["weight"] == [pytest.approx(slope)] and optimum["bias"] == pytest.approx(intercept)
    best = np.mean((slope * x + intercept - y) ** 2)
    assert optimum["loss"] == pytest.approx(best)
    assert optimum["loss_gap"] == pytest.approx(read_metrics(tmp_path)["train"]["loss"] - best, rel=1e-4)
    assert optimum["loss_gap"] > 0 and optimum["param_gap"] > 0


def test_separable_logistic_data_says_so(tmp_path):
    train(compose_train("experiment=logistic_pass_fail", run_dir=tmp_path))
    optimum = read_metrics(tmp_path)["optimum"]
    assert optimum["separable"] is True and "loss" not in optimum


def test_diabetes_gap_against_sklearn(tmp_path, diabetes_csv):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_train("experiment=logistic_diabetes", f"data.path={diabetes_csv}", run_dir=tmp_path)
    train(cfg)
    metrics = read_metrics(tmp_path)
    x, y = (t.numpy().astype(float) for t in diabetes())
    reference = LogisticRegression(C=np.inf, max_iter=10_000, tol=1e-10).fit(x, y[:, 0])
    best = log_loss(y[:, 0], reference.predict_proba(x)[:, 1])
    assert metrics["optimum"]["loss"] == pytest.approx(best, abs=1e-6)
    assert metrics["optimum"]["loss_gap"] == pytest.approx(metrics["train"]["loss"] - best, abs=1e-6)
    # the lecture's 76.68% (582 of 759 rows), give or take one row: float32 kernels differ between CPUs
    assert metrics["train"]["acc"] == pytest.approx(0.7668, abs=1.5 / 759)

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/optimum_loss")] == [0, 101]
    assert events.Scalars("train/loss_gap")[0].value == pytest.approx(metrics["optimum"]["loss_gap"], rel=1e-5)
