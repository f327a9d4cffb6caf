"""A sweep that can be killed and finished: its directory (a new one, or for ``resume=auto`` the sweep it
continues), what it records of itself in ``<sweep dir>/.sweep/`` (its definition and its jobs), its lock, and
the state each of its jobs is in. Light on purpose: Hydra loads this module for every run (a callback).

    deepbasics-train -m experiment=blobs_mlp model.optimizer.lr=0.01,0.1 seed=1,2     # killed halfway
    deepbasics-train -m experiment=blobs_mlp model.optimizer.lr=0.01,0.1 seed=1,2 resume=auto

The second command continues the latest sweep of blobs_mlp (``resume=<sweep dir>`` names one): its finished
jobs keep their results, the others continue from their last checkpoint or start, under the job numbers and
in the directories they had."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from deepbasics.errors import ConfigError
from deepbasics.files import lock_run_dir, unlock_run_dir

STATE = ".sweep"  # inside the sweep directory
DEFINITION = "definition.yaml"
JOBS = "jobs.yaml"
LAUNCHER = "launcher"
LAST = Path("checkpoints") / "last.ckpt"
FINISHED = ("completed", "stopped_early")
# Settings that may change when a sweep is finished: how it runs, not what it trains.
HOW = {"n_jobs", "max_batch_size", "storage", "_target_"}
# Command-line keys that say how to run the command, not what the sweep is (nor a job's name).
HOW_TO_RUN = ("resume", "dry_run", "progress")  # progress: a bar or lines, the same training


def sweep_dir(output_dir: str, name: str, resume: str | None, fresh: str) -> Path:
    """The sweep's directory: ``<output_dir>/multiruns/<name>/<fresh>``, or the one it continues."""
    root = Path(output_dir) / "multiruns" / name
    if resume in (None, ""):
        return root / fresh
    if not isinstance(resume, str):  # resume=true
        raise ConfigError(f"resume={resume!r}: pass resume=auto or a sweep directory")
    if resume == "auto":
        sweeps = [d for d in root.glob("*") if (d / STATE / DEFINITION).is_file()] if root.is_dir() else []
        if not sweeps:
            raise ConfigError(f"resume=auto: no sweep of {name} under {root} to continue; run the sweep without resume")
        return max(sweeps, key=lambda d: (d / STATE / DEFINITION).stat().st_mtime_ns).resolve()
    path = Path(resume).expanduser().resolve()
    if not (path / STATE / DEFINITION).is_file():
        raise ConfigError(f"resume={resume}: {path} is not a sweep directory (it has no {STATE}/{DEFINITION})")
    return path


def definition(config: DictConfig) -> dict[str, Any]:
    """What makes a sweep this sweep: the experiment, the command line's overrides (not ``resume=``) and the
    sweeper's search space; not how it runs (the launcher, batch sizes, Optuna's storage or n_trials)."""
    overrides = sorted(o for o in config.hydra.overrides.task if o.split("=")[0].lstrip("+~") not in HOW_TO_RUN)
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    return {
        "experiment": config.get("name"),
        "overrides": overrides,
        "sweeper": {k: v for k, v in sweeper.items() if k not in HOW and k != "n_trials"},
    }


def swept_keys(sweep: Path) -> list[str]:
    """The config keys a sweep varies, in the order of its definition: the command line's sweep overrides
    (``lr=0.01,0.1``, ``range(...)``) and the sweeper's search space (Optuna's params); [] for a directory
    that is not a sweep's."""
    path = Path(sweep) / STATE / DEFINITION
    if not path.is_file():
        return []
    return list(_swept_keys(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _swept_keys(path: str, mtime_ns: int) -> tuple[str, ...]:
    """``swept_keys`` of one version of a definition file: parsed once, not once per job that ends."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    recorded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    parsed = OverridesParser.create().parse_overrides(recorded.get("overrides") or [])
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    keys += list((recorded.get("sweeper") or {}).get("params") or {})
    return tuple(dict.fromkeys(keys))


def difference(recorded: dict, asked: dict) -> str | None:
    """The first way ``asked`` is not the sweep ``recorded``, in words; None when they are the same."""
    if recorded["experiment"] != asked["experiment"]:
        return f"it is a sweep of {recorded['experiment']}, not {asked['experiment']}"
    was, now = set(recorded["overrides"]), set(asked["overrides"])
    if was != now:
        gone, new = sorted(was - now), sorted(now - was)
        if gone and new:
            return f"it ran {' '.join(gone)} where this command has {' '.join(new)}"
        return f"it ran {' '.join(gone)}, which this command leaves out" if gone else f"it did not run {' '.join(new)}"
    for key in sorted(set(recorded["sweeper"]) | set(asked["sweeper"])):
        if recorded["sweeper"].get(key) != asked["sweeper"].get(key):
            return f"its hydra.sweeper.{key} was {recorded['sweeper'].get(key)}, not {asked['sweeper'].get(key)}"
    return None


def has_attempt(job_dir: Path) -> bool:
    """Whether a job directory holds what a run wrote (more than Hydra's files and the job's log)."""
    return job_dir.is_dir() and any(p.name not in (".hydra", ".lock") and p.suffix != ".log" for p in job_dir.iterdir())


def job_state(job_dir: Path) -> tuple[str, int | None]:
    """(state, epochs): "finished", "failed" or "interrupted" (with metrics.json), "resumable" (a kill left
    its last.ckpt), or "not started"; the epochs its record or its last checkpoint holds."""
    import json

    metrics = job_dir / "metrics.json"
    status = json.loads(metrics.read_text()).get("status") if metrics.is_file() else None
    if status in FINISHED:
        return "finished", json.loads(metrics.read_text()).get("epochs")
    if (job_dir / LAST).is_file():
        return (status or "resumable"), None
    return (status or "not started"), None


def planned(job_dir: Path, resuming: bool) -> str:
    """What a sweep would do with one of its jobs, in words (for a dry run)."""
    if not resuming:
        return "to run"
    state, epochs = job_state(job_dir)
    if state == "finished":
        return f"finished ({epochs} epochs): kept"
    if (job_dir / LAST).is_file():
        import torch  # a dry run reads the epoch a job continues from

        done = torch.load(job_dir / LAST, map_location="cpu", weights_only=True)
        epoch = done.get("deepbasics", {}).get("epochs", done.get("global_step"))
        return f"to resume from epoch {epoch}" + (f" ({state})" if state not in ("resumable", "interrupted") else "")
    return "to run" + (f" again ({state})" if state not in ("not started",) else "")


def resumed_job(job_dir: str) -> str | None:
    """What ``resume=auto`` means for one job of a sweep: its own last checkpoint (a finished job then says
    it is finished, a failed or interrupted one continues from it), or nothing: it starts."""
    path = Path(job_dir)
    return str(path) if (path / LAST).is_file() else None


def finish_writes(sweep: Path) -> None:
    """What a kill cut short in a sweep: the checkpoints of a stacked group's step that its journal says
    are complete are put in place, and those it had only begun to write are dropped."""
    from deepbasics.files import FileSet, roll_forward

    for journal in (sweep / STATE).glob("journal-*.json"):
        roll_forward(journal)
    for pending in sweep.glob(f"*/checkpoints/.*{FileSet.PENDING}"):
        pending.unlink()


def record_jobs(sweep: Path, jobs: list[list[str]]) -> None:
    """The sweep's jobs in order (their overrides), the first time they are known, so the report lists the
    jobs a kill kept from starting."""
    path = sweep / STATE / JOBS
    if not path.is_file():
        OmegaConf.save(OmegaConf.create([list(j) for j in jobs]), path)


def recorded_jobs(sweep: Path) -> list[list[str]]:
    path = sweep / STATE / JOBS
    return [list(j) for j in OmegaConf.load(path)] if path.is_file() else []


class SweepState(Callback):
    """Hydra callback: at a sweep's start, the sweep directory is locked (one process finishes a sweep at a
    time) and records the sweep's definition; a resume is checked against it, and a new sweep refuses a
    directory that holds one already. The lock goes when the sweep ends (or its process does)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from deepbasics.errors import exit_with

        sweep = Path(str(config.hydra.sweep.dir)).resolve()
        if config.get("dry_run"):  # checked, nothing written
            try:
                if (sweep / STATE / DEFINITION).is_file():
                    self._check(config, sweep)
            except ConfigError as err:
                exit_with(err)
            return
        try:
            sweep.mkdir(parents=True, exist_ok=True)
            lock_run_dir(sweep)
            self._check(config, sweep)
        except ConfigError as err:
            unlock_run_dir(sweep)
            exit_with(err)
        finish_writes(sweep)
        # Which launcher runs this attempt (a resume may use another), for the jobs' MLflow tags.
        launcher = str(config.hydra.launcher.get("_target_") or "").rsplit(".", 1)[-1]
        (sweep / STATE / LAUNCHER).write_text(launcher + "\n")

    def _check(self, config: DictConfig, sweep: Path) -> None:
        asked = definition(config)
        recorded_path = sweep / STATE / DEFINITION
        resume = config.get("resume")
        if recorded_path.is_file():
            recorded = OmegaConf.to_container(OmegaConf.load(recorded_path))
            if not resume:
                raise ConfigError(
                    f"{sweep} holds a sweep already; finish it with the same command and resume=auto"
                    f" (or resume={sweep}), or start a new one with another hydra.sweep.dir"
                )
            why = difference(recorded, asked)
            if why is not None:
                raise ConfigError(
                    f"resume={resume}: {sweep} is another sweep ({why}); run the command it ran (see"
                    f" {recorded_path}) to finish it, or drop resume= to start a new sweep"
                )
            return
        used = [d.name for d in sweep.iterdir() if d.is_dir() and d.name != STATE and has_attempt(d)]
        if used:
            raise ConfigError(
                f"{sweep} holds the jobs of an earlier run ({used[0]}, ...); pass another hydra.sweep.dir, or"
                " move them away"
            )
        (sweep / STATE).mkdir(exist_ok=True)
        OmegaConf.save(OmegaConf.create(asked), recorded_path)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        unlock_run_dir(Path(str(config.hydra.sweep.dir)).resolve())
