"""The resolvers the configs use: the run directory (fresh, or the resumed run's) and job directory names."""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from deepbasics.config.paths import CONF_DIR
from deepbasics.config.run_dir import choose_run_dir, fresh_stem
from deepbasics.config.sweep_dir import HOW_TO_RUN, sweep_dir, swept_keys
from deepbasics.errors import ConfigError, exit_with
from deepbasics.files import lock_run_dir


def config_groups() -> set[str]:
    return {p.name for p in Path(CONF_DIR).iterdir() if p.is_dir()}


def _run_dir(output_dir: str, name: str, resume: str | None, fresh: str, overrides=()) -> str:
    try:
        run_dir = choose_run_dir(output_dir, name, resume, fresh, overrides, config_groups())
        if resume not in (None, ""):  # before Hydra writes into it: a second writer leaves no trace
            lock_run_dir(run_dir)
    except ConfigError as err:
        exit_with(err)
    return str(run_dir)


def _output_subdir(resume: str | None, stamp: str, output_dir: str | None = None) -> str:
    # A resumed run keeps the first run's .hydra/ and files its own beside it; a job of a resumed sweep that
    # had not started gets the .hydra/ of a first run.
    first = output_dir is not None and not (Path(output_dir) / ".hydra" / "config.yaml").is_file()
    return ".hydra" if resume in (None, "") or first else f".hydra/resume_{stamp}"


def _sweep_dir(output_dir: str, name: str, resume: str | None, fresh: str) -> str:
    try:
        return str(sweep_dir(output_dir, name, resume, fresh))
    except ConfigError as err:
        exit_with(err)


# Overrides that say where or which recipe, not what differs between the jobs of a sweep.
_NOT_IN_JOB_NAMES = ("hydra.", "hydra/", "paths.", "experiment", "hparams_search", *HOW_TO_RUN)


def _job_dir(num: int, overrides, exclude=(), sweep: str | None = None) -> str:
    """A multirun job's directory name: its number, then the values its sweep varies with short keys, e.g.
    ``03_lr=0.1,seed=3``, so a TensorBoard run selector over the sweep reads as the sweep (overrides every
    job shares are the sweep's, not a job's). A job of a sweep being finished keeps the directory its first
    attempt had, whatever the naming then was."""
    resuming = any(str(o).partition("=")[0] == "resume" for o in overrides)
    if sweep is not None and resuming:
        earlier = [p.name for p in Path(sweep).glob(f"{int(num):02d}*") if p.is_dir()]
        earlier = [name for name in earlier if name == f"{int(num):02d}" or name.startswith(f"{int(num):02d}_")]
        if earlier:
            return earlier[0]
    swept = set(swept_keys(Path(sweep))) if sweep is not None else set()
    parts = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key in set(exclude or ()) or key.startswith(_NOT_IN_JOB_NAMES) or (swept and key not in swept):
            continue
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    name = f"{int(num):02d}" + ("_" + ",".join(parts) if parts else "")
    return re.sub(r"[\\/\s]+", "_", name)[:120]  # one path component, within any file system's limit


def _artifacts_beside(tracking_uri: str | None, experiment: str) -> str | None:
    """Where a new MLflow experiment keeps its artifacts: ``mlartifacts/<experiment>`` beside a local sqlite
    store (MLflow's default, ./mlruns of whatever directory the run started in, would scatter them); a
    server or a file store keeps its own default (None)."""
    prefix = "sqlite:///"
    if not tracking_uri or not str(tracking_uri).startswith(prefix):
        return None
    return str(Path(os.path.abspath(str(tracking_uri)[len(prefix) :])).parent / "mlartifacts" / experiment)


def register_resolvers() -> None:
    # Cached: every interpolation in one process sees the same fresh_stem, so a run has exactly one
    # directory (the Python API asks fresh_stem itself, once per run).
    resolvers = {
        "fresh_stem": fresh_stem,
        "run_dir": _run_dir,
        "output_subdir": _output_subdir,
        "sweep_dir": _sweep_dir,
        "job_dir": _job_dir,
        "abspath": os.path.abspath,  # a store shared by runs started from other directories
        "basename": os.path.basename,
        "mlflow_artifacts": _artifacts_beside,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=True)
