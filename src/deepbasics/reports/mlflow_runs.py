"""MLflow runs that read as what they are: a sweep is a parent run with its jobs nested under it, every run
tagged with its run directory (a job with its sweep, number and launcher), each setting logged once as a
flat param, a resumed run continuing its own MLflow run, and the files a user opens (figures, model.pt,
the config, the sweep summary) logged as artifacts.

Lightning's MLFlowLogger does the logging; this module gives it its tags and the run to continue, and does
what the logger has no option for through MLflow's public client. A run directory remembers its MLflow run
in ``.mlflow.json``, a sweep its parent run in ``.sweep/mlflow.json`` (per store and experiment), so nothing
is looked up by a search that a path's quotes could break."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from deepbasics.config.sweep_dir import DEFINITION, LAUNCHER, STATE
from deepbasics.files import atomic_write, locked

TAG = "deepbasics."
# MLflow 3 UIs before the GenAI/training switch open an experiment of this kind on its training runs, not on
# the GenAI overview; 3.17's switch reads ?workflowType=machine_learning from the URL instead (README).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def logger_kwargs(conf, run_dir: Path) -> dict[str, Any]:
    """MLFlowLogger's arguments for the run in ``run_dir``: the tags a new MLflow run is made with, and for a
    run that had an MLflow run in this store already (a resume, a job of a sweep being finished) that run."""
    ready_store(conf.get("tracking_uri"))
    run_dir, sweep = Path(run_dir).resolve(), sweep_of(run_dir)
    tags = {f"{TAG}run_dir": str(run_dir)}
    if sweep is not None:
        tags[f"{TAG}sweep"] = str(sweep)
        digits = run_dir.name.split("_", 1)[0]  # the job's number (config.resolvers' job_dir)
        tags |= {f"{TAG}job": str(int(digits))} if digits.isdigit() else {}
    extra: dict[str, Any] = {"tags": {**tags, **dict(conf.get("tags") or {})}}
    known = _read(run_dir / ".mlflow.json").get(_key(conf.get("tracking_uri"), conf.get("experiment_name")))
    return extra | ({"run_id": known} if known and not conf.get("run_id") else {})


def ready_store(tracking_uri: str | None) -> None:
    """Make a local sqlite store's tables, one process at a time: two jobs of a parallel sweep making them at
    once leave one of them on a half-made schema (``AttributeError: dimension_attributes``)."""
    if not str(tracking_uri or "").startswith("sqlite:///"):
        return
    path = Path(str(tracking_uri).removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_name(path.name + ".lock")):  # whoever makes the tables holds it until they are made
        if not (path.is_file() and path.stat().st_size > 0):
            from mlflow import MlflowClient

            MlflowClient(str(tracking_uri)).search_experiments(max_results=1)


def sweep_of(run_dir: Path) -> Path | None:
    """The sweep directory a run directory is a job of, or None for a run of its own."""
    parent = Path(run_dir).resolve().parent
    return parent if (parent / STATE / DEFINITION).is_file() else None


def start_run(logger, settings: dict[str, Any], run_dir: Path) -> None:
    """Open the logger's MLflow run for training (a new one, or the one this run directory had), nest it
    under its sweep's parent run, tag it with the launcher of this attempt, and log the run's settings once
    as flat params; a resume that changed one (``epochs=`` more) says so in a tag (params cannot change)."""
    import mlflow

    client, run_id = logger.experiment, logger.run_id  # makes the experiment and the run
    experiment = client.get_experiment(logger.experiment_id)
    key = _key(mlflow.get_tracking_uri(), experiment.name)  # the logger set the tracking URI
    run_dir = Path(run_dir).resolve()
    _record(run_dir / ".mlflow.json", key, run_id)
    if KIND_TAG not in experiment.tags:  # a kind the user chose stays
        client.set_experiment_tag(logger.experiment_id, KIND_TAG, KIND)
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":  # a run continued after an interruption
        client.update_run(run_id, status="RUNNING")
    sweep = sweep_of(run_dir)
    if sweep is not None:
        if "mlflow.parentRunId" not in run.data.tags:
            client.set_tag(run_id, "mlflow.parentRunId", sweep_parent(client, key, logger.experiment_id, sweep))
        launcher = (sweep / STATE / LAUNCHER).read_text().strip() if (sweep / STATE / LAUNCHER).is_file() else None
        if launcher and run.data.tags.get(f"{TAG}launcher") != launcher:
            client.set_tag(run_id, f"{TAG}launcher", launcher)
    logged = run.data.params
    new = {k: v for k, v in settings.items() if k not in logged}
    changed = [f"{k}: {logged[k]} -> {v}" for k, v in settings.items() if k in logged and logged[k] != str(v)]
    if new:
        logger.log_hyperparams(new)
    if changed:
        client.set_tag(run_id, f"{TAG}changed_on_resume", "; ".join(changed))


def sweep_parent(client, key: str, experiment_id: str, sweep: Path) -> str:
    """The id of the sweep's parent run in this store and experiment (``key``), made by the first job that
    asks (under a lock: the jobs of a parallel launcher ask at once); a resumed sweep's runs again."""
    record = sweep / STATE / "mlflow.json"
    with locked(sweep / STATE / "mlflow.lock"):
        known = _read(record).get(key, {}).get("run_id")
        try:
            run = client.get_run(known) if known else None
        except Exception:  # deleted from the store since: the sweep gets a new parent run
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            if run.info.status != "RUNNING":
                client.update_run(known, status="RUNNING")
            return known
        tags = {f"{TAG}sweep": str(sweep), f"{TAG}kind": "sweep"}
        if (sweep / STATE / LAUNCHER).is_file():
            tags[f"{TAG}launcher"] = (sweep / STATE / LAUNCHER).read_text().strip()
        run = client.create_run(experiment_id, run_name=sweep.name, tags=tags)
        _record(record, key, {"run_id": run.info.run_id, "uri": key.rsplit("#", 1)[0]})
        return run.info.run_id


def log_run_files(logger, run_dir: Path) -> None:
    """A finished run's files as artifacts of its MLflow run: figures/*.png, model.pt and its config."""
    client, run_id = logger.experiment, logger.run_id
    for figure in sorted((run_dir / "figures").glob("*.png")):
        client.log_artifact(run_id, str(figure), "figures")
    for path, folder in [(run_dir / "model.pt", None)] + [
        (run_dir / ".hydra" / n, "hydra") for n in ("config.yaml", "overrides.yaml")
    ]:
        if path.is_file():
            client.log_artifact(run_id, str(path), folder)


def curves_of_run(logger, tags) -> dict[str, list[tuple[int, float]]]:
    """The loss curves (``tags``) of the logger's MLflow run, for loss.png where no TensorBoard events are
    written; a step logged twice (by an attempt cut short, then by its resume) counts once, as the last."""
    history = {
        tag: sorted(logger.experiment.get_metric_history(logger.run_id, tag), key=lambda p: p.timestamp) for tag in tags
    }
    return {tag: sorted({p.step: p.value for p in points}.items()) for tag, points in history.items() if points}


def end_sweep(sweep: Path, report: dict[str, Any]) -> None:
    """The sweep report on its parent runs: the summary files as artifacts, summary.md as the description,
    the settings every job shared as params, the best job's final metrics as metrics (the runs table's row
    of the sweep reads as its result) and its name in a tag; FINISHED, or KILLED when a job did not finish."""
    records = _read(Path(sweep) / STATE / "mlflow.json")
    if not records:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    best, stamp = report.get("best"), int(time.time() * 1000)
    for entry in records.values():
        client, run_id = MlflowClient(entry["uri"]), entry["run_id"]
        for name in ("summary.md", "summary.csv", "summary.png"):
            if (Path(sweep) / name).is_file():
                client.log_artifact(run_id, str(Path(sweep) / name))
        if (Path(sweep) / "summary.md").is_file():
            client.set_tag(run_id, "mlflow.note.content", (Path(sweep) / "summary.md").read_text())
        logged = client.get_run(run_id).data.params
        shared = [Param(k, str(v)) for k, v in (report.get("same") or {}).items() if k not in logged]
        client.log_batch(run_id, params=shared)
        if best:
            values = [
                Metric(k, float(v), stamp, 0)
                for k, v in best.items()
                if "/" in k and isinstance(v, (int, float)) and math.isfinite(v)
            ]
            client.log_batch(run_id, metrics=values)
            client.set_tag(run_id, f"{TAG}best_job", best["job"])
            client.set_tag(run_id, f"{TAG}best", f"{best['metric']} {best['value']:.6g}")
        client.set_tag(run_id, f"{TAG}jobs", f"{report['jobs'] - report['failed']} of {report['jobs']} finished")
        client.set_terminated(run_id, "KILLED" if report["failed"] else "FINISHED")


def _key(uri: str | None, experiment: str | None) -> str:
    return f"{uri or os.environ.get('MLFLOW_TRACKING_URI', '')}#{experiment}"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _record(path: Path, key: str, value) -> None:
    """Set ``key: value`` in a small JSON record (a run's MLflow run id, a sweep's parent run)."""
    data = _read(path) | {key: value}
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode()))
