"""logger=mlflow read back through MLflow's own client as its UI shows it: a sweep is a parent run with its
jobs nested under it, two sweeps of one experiment are told apart by their tags, each setting is one flat
param, the files a user opens are artifacts in a real location beside the store, and a resumed run
continues its own MLflow run."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import read_metrics, run_dirs, run_in_this_process

mlflow = pytest.importorskip("mlflow")

SHORT = [
    "experiment=blobs_mlp",
    "epochs=40",
    "log_every=10",
    "val_every=20",
    "callbacks.model_checkpoint.every_n_epochs=20",
    "logger=mlflow",
]


def client_of(tmp_path: Path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    # set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: monkeypatch takes it away afterwards
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    return mlflow.MlflowClient(store)


def artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(found)


@pytest.mark.slow
def test_sweeps_are_parent_runs_with_their_jobs_nested_and_their_files_logged(tmp_path, monkeypatch, capfd):
    from deepbasics.reports.metrics import flat_settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the runs' own default store, under outputs/
    for lrs in ("0.03,0.3", "0.1,1.0"):  # two sweeps of one experiment, into one store
        proc = run_in_this_process("deepbasics-train", ["-m", *SHORT, f"model.optimizer.lr={lrs}"], tmp_path,
                                   monkeypatch, capfd)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    sweeps = sorted((tmp_path / "outputs" / "multiruns" / "blobs_mlp").iterdir())
    client = client_of(tmp_path, monkeypatch)

    experiment = client.get_experiment_by_name("blobs_mlp")
    location = tmp_path / "outputs" / "mlartifacts" / "blobs_mlp"
    assert experiment.artifact_location == str(location)
    runs = client.search_runs([experiment.experiment_id])
    parents = sorted(
        (r for r in runs if r.data.tags.get("deepbasics.kind") == "sweep"), key=lambda r: r.info.start_time
    )
    assert [p.data.tags["deepbasics.sweep"] for p in parents] == [str(s) for s in sweeps]
    assert len(runs) == 2 + 4

    for parent, sweep in zip(parents, sweeps, strict=True):
        jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
        children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                          key=lambda r: r.info.run_name)  # fmt: skip
        assert [c.info.run_name for c in children] == [j.name for j in jobs]
        assert parent.info.run_name == sweep.name and parent.info.status == "FINISHED"
        launcher = "BasicLauncher"
        assert parent.data.tags["deepbasics.launcher"] == launcher
        summary = (sweep / "summary.md").read_text()
        assert parent.data.tags["mlflow.note.content"] == summary  # the run's description: the ranked table
        assert (
            parent.data.tags["deepbasics.best_job"] in summary
            and parent.data.tags["deepbasics.jobs"] == "2 of 2 finished"
        )
        assert artifacts(client, parent.info.run_id) == ["summary.csv", "summary.md", "summary.png"]
        # the sweep's row in the runs table reads as its result: the best job's metrics, the shared settings
        best = jobs[[j.name for j in jobs].index(parent.data.tags["deepbasics.best_job"])]
        assert parent.data.metrics["val/loss"] == pytest.approx(read_metrics(best)["val"]["loss"])
        assert parent.data.metrics["test/acc"] == pytest.approx(read_metrics(best)["test"]["acc"])
        assert parent.data.params == {
            "experiment": "blobs_mlp",
            "epochs": "40",
            "log_every": "10",
            "val_every": "20",
            "callbacks.model_checkpoint.every_n_epochs": "20",
            "logger": "mlflow",
        }
        for number, (child, job) in enumerate(zip(children, jobs, strict=True)):
            tags = child.data.tags
            assert (tags["deepbasics.sweep"], tags["deepbasics.job"]) == (str(sweep), str(number))
            assert (tags["deepbasics.run_dir"], tags["deepbasics.launcher"]) == (str(job), launcher)
            # every setting once, flat: no Lightning-nested duplicates (optimizer/lr), no multi-line values
            cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
            expected = {k: str(v) for k, v in flat_settings(cfg).items()}
            assert child.data.params == expected
            assert child.data.params["data.centers"] == "[[1,1],[-1,-1],[1,-1],[-1,1]]"
            assert child.data.metrics["test/loss"] == pytest.approx(read_metrics(job)["test"]["loss"])
            logged = artifacts(client, child.info.run_id)
            # no TensorBoard, so no loss.png: MLflow's own charts draw its curves
            assert logged == ["figures/fit.png", "hydra/config.yaml", "hydra/overrides.yaml", "model.pt"]
            stored = location / child.info.run_id / "artifacts"  # a real place, beside the store
            assert (stored / "figures" / "fit.png").read_bytes() == (job / "figures" / "fit.png").read_bytes()
            assert (stored / "model.pt").read_bytes() == (job / "model.pt").read_bytes()
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_a_resumed_run_continues_its_own_mlflow_run(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    proc = run_in_this_process("deepbasics-train", SHORT, tmp_path, monkeypatch, capfd)
    assert proc.returncode == 0, proc.stderr
    (run,) = run_dirs(tmp_path, "blobs_mlp")
    proc = run_in_this_process("deepbasics-train", [*SHORT, f"resume={run}", "epochs=80"], tmp_path, monkeypatch, capfd)
    assert proc.returncode == 0, proc.stderr

    client = client_of(tmp_path, monkeypatch)
    experiment = client.get_experiment_by_name("blobs_mlp")
    (found,) = client.search_runs([experiment.experiment_id])
    assert json.loads((run / ".mlflow.json").read_text()) == {
        f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}#blobs_mlp": found.info.run_id
    }
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert "mlflow.parentRunId" not in found.data.tags and found.data.tags["deepbasics.run_dir"] == str(run)
    # params cannot change: the first value stays, and the change is told in a tag
    assert found.data.params["epochs"] == "40"
    assert found.data.tags["deepbasics.changed_on_resume"] == "epochs: 40 -> 80"
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert sorted({p.step for p in history}) == [0, 10, 20, 30, 40, 50, 60, 70, 80]  # one curve, continued
    assert found.data.metrics["test/loss"] == pytest.approx(read_metrics(run)["test"]["loss"])


def _open_store(store: str, name: str) -> None:
    from deepbasics.reports.mlflow_runs import ready_store

    ready_store(store)
    mlflow.MlflowClient(store).create_experiment(name)


def test_jobs_that_start_together_on_a_new_store_wait_for_its_tables(tmp_path):
    """Two jobs of a parallel sweep open a store that does not exist yet at the same moment: one makes its
    tables, the other waits for them (two at once left one on a half-made schema, AttributeError). The jobs
    are forked processes, as a launcher's workers are other processes."""
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    fork = multiprocessing.get_context("fork")
    jobs = [fork.Process(target=_open_store, args=(store, f"e{i}")) for i in (1, 2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert {"e1", "e2"} <= {e.name for e in mlflow.MlflowClient(store).search_experiments()}
