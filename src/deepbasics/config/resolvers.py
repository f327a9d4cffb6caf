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
    # a resumed run files its .hydra/ beside the first run's; a resumed sweep's job that never ran gets a first one
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
    """A multirun job's directory name: its number, then the values only its sweep varies, short keys
    (``03_lr=0.1,seed=3``); a job of a sweep being finished keeps the directory its first attempt had."""
    number = f"{int(num):02d}"
    if sweep is not None and any(str(o).partition("=")[0] == "resume" for o in overrides):
        earlier = [p.name for p in Path(sweep).glob(f"{number}*") if p.is_dir() and p.name.partition("_")[0] == number]
        if earlier:
            return earlier[0]
    swept = swept_keys(sweep) if sweep is not None else []
    parts = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key not in (exclude or ()) and not key.startswith(_NOT_IN_JOB_NAMES) and (not swept or key in swept):
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    name = number + ("_" + ",".join(parts) if parts else "")
    return re.sub(r"[\\/\s]+", "_", name)[:120]  # one path component, within any file system's limit


def _artifacts_beside(tracking_uri: str | None, experiment: str) -> str | None:
    """``mlartifacts/<experiment>`` beside a local sqlite store (MLflow's ./mlruns would scatter them), else None."""
    if not str(tracking_uri or "").startswith("sqlite:///"):
        return None
    return str(Path(os.path.abspath(str(tracking_uri).removeprefix("sqlite:///"))).parent / "mlartifacts" / experiment)


def register_resolvers() -> None:
    # Cached: a process sees one fresh_stem, so a run has one directory (the Python API asks fresh_stem itself).
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
