"""What Lightning's MLFlowLogger has no option for: a sweep as a parent run of its jobs, tags naming run directories,
flat params logged once, a resume continuing its run (remembered in ``.mlflow.json``, a sweep's in ``.sweep/``)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from deepbasics.config.sweep_dir import LAUNCHER, STATE, sweep_of
from deepbasics.files import read_json
from deepbasics.reports.metrics import write_json

TAG = "deepbasics."


def logger_kwargs(conf, run_dir: Path) -> dict[str, Any]:
    """MLFlowLogger's arguments for the run in ``run_dir``: its tags, and the MLflow run it had in this store."""
    ready_store(conf.get("tracking_uri"))
    run_dir, sweep = Path(run_dir).resolve(), sweep_of(run_dir)
    tags = {f"{TAG}run_dir": str(run_dir)}
    if sweep is not None:
        tags[f"{TAG}sweep"] = str(sweep)
        digits = run_dir.name.split("_", 1)[0]  # the job's number (config.resolvers' job_dir)
        tags |= {f"{TAG}job": str(int(digits))} if digits.isdigit() else {}
    tags |= dict(conf.get("tags") or {})
    known = read_json(run_dir / ".mlflow.json").get(_key(conf.get("tracking_uri"), conf.get("experiment_name")))
    return {"tags": tags} | ({"run_id": known} if known and not conf.get("run_id") else {})


def ready_store(tracking_uri: str | None) -> None:
    """Make a local sqlite store's tables one process at a time: two jobs of a parallel sweep making them at
    once leave one on a half-made schema (``AttributeError: dimension_attributes``)."""
    if not str(tracking_uri or "").startswith("sqlite:///"):
        return
    path = Path(str(tracking_uri).removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    # whoever makes the tables holds it until they are made
    with FileLock(path.with_name(path.name + ".lock"), mode=0o666):
        if not (path.is_file() and path.stat().st_size > 0):
            from mlflow import MlflowClient

            MlflowClient(str(tracking_uri)).search_experiments(max_results=1)


def start_run(logger, settings: dict[str, Any], run_dir: Path) -> None:
    """Open the logger's MLflow run for training, nested under its sweep's parent run and tagged with this
    attempt's launcher; log the settings once as flat params, and a resume's changes to them in a tag."""
    import mlflow

    client, run_id = logger.experiment, logger.run_id  # makes the experiment and the run
    experiment = client.get_experiment(logger.experiment_id)
    key = _key(mlflow.get_tracking_uri(), experiment.name)  # the logger set the tracking URI
    record = Path(run_dir).resolve() / ".mlflow.json"
    write_json(record, read_json(record) | {key: run_id})
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":  # a run continued after an interruption
        client.update_run(run_id, status="RUNNING")
    sweep = sweep_of(run_dir)
    if sweep is not None:
        launcher = (sweep / STATE / LAUNCHER).read_text().strip() if (sweep / STATE / LAUNCHER).is_file() else None
        if "mlflow.parentRunId" not in run.data.tags:
            parent = sweep_parent(client, key, logger.experiment_id, sweep, launcher)
            client.set_tag(run_id, "mlflow.parentRunId", parent)
        if launcher and run.data.tags.get(f"{TAG}launcher") != launcher:
            client.set_tag(run_id, f"{TAG}launcher", launcher)
    logged = run.data.params
    logger.log_hyperparams({k: v for k, v in settings.items() if k not in logged})
    changed = [f"{k}: {logged[k]} -> {v}" for k, v in settings.items() if k in logged and logged[k] != str(v)]
    if changed:  # params cannot change
        client.set_tag(run_id, f"{TAG}changed_on_resume", "; ".join(changed))


def sweep_parent(client, key: str, experiment_id: str, sweep: Path, launcher: str | None) -> str:
    """The id of the sweep's parent run in this store and experiment (``key``), made by the first job that
    asks (under a lock: a parallel launcher's jobs ask at once); a resumed sweep's runs again."""
    record = sweep / STATE / "mlflow.json"
    with FileLock(sweep / STATE / "mlflow.lock", mode=0o666):
        known = read_json(record).get(key, {}).get("run_id")
        try:
            run = client.get_run(known) if known else None
        except Exception:  # deleted from the store since: the sweep gets a new parent run
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            if run.info.status != "RUNNING":
                client.update_run(known, status="RUNNING")
            return known
        tags = {f"{TAG}sweep": str(sweep), f"{TAG}kind": "sweep"} | ({f"{TAG}launcher": launcher} if launcher else {})
        run_id = client.create_run(experiment_id, run_name=sweep.name, tags=tags).info.run_id
        write_json(record, read_json(record) | {key: {"run_id": run_id, "uri": key.rsplit("#", 1)[0]}})
        return run_id


def log_run_files(logger, run_dir: Path) -> None:
    """A finished run's files as artifacts of its MLflow run: figures/*.png, model.pt and its config."""
    figures = [(path, "figures") for path in sorted((run_dir / "figures").glob("*.png"))]
    hydra = [(run_dir / ".hydra" / name, "hydra") for name in ("config.yaml", "overrides.yaml")]
    for path, folder in [*figures, (run_dir / "model.pt", None), *hydra]:
        if path.is_file():
            logger.experiment.log_artifact(logger.run_id, str(path), folder)


def end_sweep(sweep: Path, report: dict[str, Any]) -> None:
    """The sweep report on its parent runs: the summary files, summary.md as description, the shared settings
    and the best job's metrics (the sweep's row reads as its result); KILLED when a job did not finish."""
    records = read_json(sweep / STATE / "mlflow.json")
    if not records:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    best, stamp = report["best"], int(time.time() * 1000)
    tags = {"mlflow.note.content": (sweep / "summary.md").read_text()}
    tags[f"{TAG}jobs"] = f"{report['jobs'] - report['failed']} of {report['jobs']} finished"
    metrics = []
    if best:
        tags |= {f"{TAG}best_job": best["job"], f"{TAG}best": f"{best['metric']} {best['value']:.6g}"}
        finite = {k: v for k, v in best.items() if "/" in k and isinstance(v, (int, float)) and math.isfinite(v)}
        metrics = [Metric(k, float(v), stamp, 0) for k, v in finite.items()]
    for entry in records.values():
        client, run_id = MlflowClient(entry["uri"]), entry["run_id"]
        for name in ("summary.md", "summary.csv", "summary.png"):
            if (sweep / name).is_file():
                client.log_artifact(run_id, str(sweep / name))
        logged = client.get_run(run_id).data.params
        shared = [Param(k, str(v)) for k, v in report["same"].items() if k not in logged]
        client.log_batch(run_id, metrics=metrics, params=shared, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, "KILLED" if report["failed"] else "FINISHED")


def _key(uri: str | None, experiment: str | None) -> str:
    return f"{uri or os.environ.get('MLFLOW_TRACKING_URI', '')}#{experiment}"
