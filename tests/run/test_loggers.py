"""logger=csv / mlflow / many: Lightning's own loggers get the same points as TensorBoard, on the tutorial
epoch axis, and the end of the run (test metrics, hparams); each read back with its own library."""

from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import SHORT_BLOBS as RECIPE
from conftest import read_metrics, run_dirs, run_in_this_process


@pytest.mark.slow
def test_logger_many_writes_tensorboard_csv_and_mlflow(tmp_path, monkeypatch, capfd):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the run's own default store
    proc = run_in_this_process("deepbasics-train", [*RECIPE, "logger=many"], tmp_path, monkeypatch, capfd)
    assert proc.returncode == 0, proc.stderr
    (run,) = run_dirs(tmp_path, "blobs_mlp")
    metrics = read_metrics(run)

    events = EventAccumulator(str(run))
    events.Reload()
    tensorboard = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in tensorboard] == list(range(0, 301, 50))

    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    from_csv = [(int(r["step"]), float(r["train/loss"])) for r in rows if r["train/loss"]]
    assert from_csv == tensorboard
    (test_row,) = [r for r in rows if r["test/acc"]]
    assert int(test_row["step"]) == 300 and float(test_row["test/acc"]) == pytest.approx(metrics["test"]["acc"])
    assert "experiment: blobs_mlp" in (run / "csv" / "hparams.yaml").read_text()

    # set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: monkeypatch takes it away afterwards
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (found,) = mlflow.search_runs(experiment_names=["blobs_mlp"], output_format="list")
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert found.data.params["experiment"] == "blobs_mlp" and found.data.params["seed"] == "42"
    assert found.data.metrics["test/loss"] == pytest.approx(metrics["test"]["loss"])
    history = mlflow.MlflowClient().get_metric_history(found.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == tensorboard


def test_logger_csv_alone(tmp_path):
    from conftest import compose_train
    from deepbasics.run.training import train

    run = tmp_path / "run"
    train(compose_train(*RECIPE, "logger=csv", run_dir=run))
    assert (run / "csv" / "metrics.csv").is_file() and not list(run.glob("events.out.tfevents.*"))
    assert (run / "figures" / "fit.png").is_file()  # figures do not need TensorBoard
