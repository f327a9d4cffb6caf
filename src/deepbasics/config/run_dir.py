"""Which directory a run writes into: a new one, or for `resume=` the run it continues, checked before torch
loads and before Hydra writes into it (a run stays untouched when its checkpoint is bad)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from deepbasics.config.paths import LAST, check_checkpoint_path
from deepbasics.errors import ConfigError


def fresh_stem() -> str:
    """A new run directory's name: its start time and a random token (two runs of one second differ)."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


def choose_run_dir(output_dir: str, name: str, resume, fresh: str, overrides=(), groups=frozenset()) -> Path:
    """The resumed run's directory, or ``<output_dir>/runs/<name>/<fresh>``; under torchrun every rank runs
    Hydra itself, and the rendezvous id they share names the one directory."""
    if resume in (None, ""):
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        return Path(output_dir) / "runs" / name / (f"torchrun-{run_id}" if run_id != "none" else fresh)
    if not isinstance(resume, str):  # resume=true, resume=1
        raise ConfigError(f"resume={resume!r}: pass resume=auto, a run directory or a .ckpt file")
    run_dir = _run_dir_of(output_dir, name, resume)
    refuse_group_changes(overrides, groups, run_dir)
    check_checkpoint_path(run_dir / LAST if resume == "auto" else resume, key="resume")
    if run_dir is None:  # a loose .ckpt: a new directory, the checkpoint's run continued in it
        return Path(output_dir) / "runs" / name / fresh
    if (run_dir / ".hydra" / "config.yaml").is_file():
        check_same_experiment(resume, OmegaConf.load(run_dir / ".hydra" / "config.yaml").get("name"), overrides)
    return run_dir


def check_same_experiment(resume: str, found: str | None, overrides) -> None:
    asked = [o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")]
    if asked and found is not None and asked[-1] != found:
        raise ConfigError(
            f"resume={resume} is a run of {found}, not experiment={asked[-1]}; drop experiment= or"
            f" resume a {asked[-1]} run"
        )


def refuse_group_changes(overrides, groups, run_dir: Path | None = None) -> None:
    """A resumed run keeps its model, data and trainer (plain values may change); its own groups again are no change."""
    choices = {}
    if run_dir is not None and (run_dir / ".hydra" / "hydra.yaml").is_file():
        recorded = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml")
        choices = {str(k): str(v) for k, v in (OmegaConf.select(recorded, "hydra.runtime.choices") or {}).items()}
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~")
        if group.split("/")[0] in set(groups) - {"experiment"} and choices.get(group) != value:
            raise ConfigError(f"{override} cannot change on resume; start a new run instead")


def latest(root: Path, marker: Path) -> Path | None:
    """The directory under ``root`` whose ``marker`` file was written last (a run's, or a sweep's)."""
    found = [d for d in root.glob("*") if (d / marker).is_file()]
    return max(found, key=lambda d: (d / marker).stat().st_mtime_ns).resolve() if found else None


def _run_dir_of(output_dir: str, name: str, resume: str) -> Path | None:
    if resume == "auto":
        root = Path(output_dir) / "runs" / name
        if (found := latest(root, LAST)) is None:
            raise ConfigError(f"resume=auto: no run of {name} with {LAST} under {root}; train one without resume first")
        return found
    path = Path(resume).expanduser().resolve()
    if path.is_dir():  # check_checkpoint_path names one without last.ckpt
        return path
    if path.is_file():
        return path.parent.parent if path.parent.name == "checkpoints" else None
    raise ConfigError(f"resume={resume}: no such run directory or checkpoint file; pass resume=auto or a real path")


def resumed_checkpoint(run_dir: Path | None, resume: str) -> Path:
    """The checkpoint to continue from: the one named, or the run directory's last.ckpt."""
    path = Path(resume).expanduser()
    return path.resolve() if path.is_file() else run_dir / LAST


# What a run directory holds before training: Hydra's record, the job's log, the lock, a refused run's failure
HYDRA_RECORD = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
BEFORE_TRAINING = {*HYDRA_RECORD, "train.log", "evaluate.log", "metrics.json", ".lock"}
FRESH_STEM = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_[0-9a-f]{6}")


def discard_unstarted(run_dir: Path, output_dir: str | Path, since: float) -> None:
    """Remove the directory of a run refused before it trained (bad input leaves no "failed" runs), and its
    emptied parents: only when it is surely this command's own (a fresh name, nothing older than ``since``)."""
    run_dir, output_dir = Path(run_dir).resolve(), Path(output_dir).resolve()
    under = run_dir.parent.parent == output_dir / "runs" or run_dir.parent == output_dir / "evaluations"
    if not (run_dir.is_dir() and under and FRESH_STEM.fullmatch(run_dir.name)):
        return
    for path in run_dir.rglob("*"):  # 1 s: file systems with coarse times
        if path.is_file() and (
            path.relative_to(run_dir).as_posix() not in BEFORE_TRAINING or path.stat().st_mtime < since - 1
        ):
            return
    with open(run_dir / ".lock", "a+b") as lock:
        try:  # another process running in it (a second run given the same directory) keeps it
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        shutil.rmtree(run_dir, ignore_errors=True)
    for parent in (run_dir.parent, run_dir.parent.parent):
        if parent != output_dir:
            with contextlib.suppress(OSError):  # runs/<name>/, runs/ or evaluations/, when they are empty now
                parent.rmdir()
