"""A sweep that can be killed and finished (``resume=``): its directory, its record in ``<sweep dir>/.sweep/``,
its lock and its jobs' states. Light on purpose: Hydra loads it for every run (a callback)."""

from __future__ import annotations

import functools
import sys
from itertools import groupby
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from deepbasics.config.run_dir import LAST, latest
from deepbasics.errors import ConfigError, exit_with, one_line
from deepbasics.files import FileSet, atomic_write, lock_run_dir, read_json, roll_forward, unlock_run_dir

STATE = ".sweep"  # inside the sweep directory
DEFINITION = "definition.yaml"
JOBS = "jobs.yaml"
LAUNCHER = "launcher"
FINISHED = ("completed", "stopped_early")  # metrics.json statuses of runs whose end phase is done
HOW = {"n_jobs", "max_batch_size", "storage", "_target_", "n_trials"}  # may change on resume: how the sweep runs
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
        if (found := latest(root, Path(STATE) / DEFINITION)) is None:
            raise ConfigError(f"resume=auto: no sweep of {name} under {root} to continue; run the sweep without resume")
        return found
    path = Path(resume).expanduser().resolve()
    if not (path / STATE / DEFINITION).is_file():
        raise ConfigError(f"resume={resume}: {path} is not a sweep directory (it has no {STATE}/{DEFINITION})")
    return path


def definition(config: DictConfig) -> dict[str, Any]:
    """What makes a sweep this sweep (experiment, command-line overrides, search space), not how it runs."""
    overrides = sorted(o for o in config.hydra.overrides.task if o.split("=")[0].lstrip("+~") not in HOW_TO_RUN)
    sweeper = {k: v for k, v in OmegaConf.to_container(config.hydra.sweeper, resolve=False).items() if k not in HOW}
    return {"experiment": config.get("name"), "overrides": overrides, "sweeper": sweeper}


def sweep_of(run_dir: Path) -> Path | None:
    """The sweep directory a run directory is a job of, or None for a run of its own."""
    parent = Path(run_dir).resolve().parent
    return parent if (parent / STATE / DEFINITION).is_file() else None


def swept_keys(sweep: Path) -> tuple[str, ...]:
    """The config keys a sweep varies (its sweep overrides, then its sweeper's params); () for a non-sweep."""
    path = Path(sweep) / STATE / DEFINITION
    return _swept_keys(path, path.stat().st_mtime_ns) if path.is_file() else ()


@functools.lru_cache(maxsize=8)  # every job of a sweep asks twice (its directory's name, its run): read once
def _swept_keys(path: Path, written: int) -> tuple[str, ...]:
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
    if was != now:  # what only one of them has: "(nothing)" where the other adds an override
        gone, new = (" ".join(sorted(a - b)) or "(nothing)" for a, b in ((was, now), (now, was)))
        return f"it ran {gone} where this command has {new}"
    if recorded["sweeper"] != asked["sweeper"]:
        return f"its hydra.sweeper was {recorded['sweeper']}, not {asked['sweeper']}"


def job_state(job_dir: Path) -> tuple[str, int | None]:
    """(state, epochs): "finished" (with epochs), "failed", "interrupted", "resumable" (a last.ckpt), "not started"."""
    record = read_json(job_dir / "metrics.json")  # {} when cut short: the job is finished again from last.ckpt
    if record.get("status") in FINISHED:
        return "finished", record.get("epochs")
    return record.get("status") or ("resumable" if (job_dir / LAST).is_file() else "not started"), None


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
    return "to run" + (f" again ({state})" if state != "not started" else "")


def resumed_job(job_dir: str) -> str | None:
    """What ``resume=auto`` means for one job of a sweep: its own last checkpoint, or None (it starts)."""
    return str(Path(job_dir)) if (Path(job_dir) / LAST).is_file() else None


def consecutive(items: list, number=int) -> list[list]:
    """``items`` in runs of consecutive numbers, in their order (a run's numbers less their positions agree)."""
    runs = groupby(enumerate(items), lambda pair: number(pair[1]) - pair[0])
    return [[item for _, item in run] for _, run in runs]


def record_jobs(sweep: Path, jobs: list[list[str]]) -> None:
    """The sweep's jobs (their overrides), once, so that a report lists the jobs a kill kept from starting."""
    path = sweep / STATE / JOBS
    if not path.is_file():
        OmegaConf.save([list(j) for j in jobs], path)


def recorded_jobs(sweep: Path) -> list[list[str]]:
    path = sweep / STATE / JOBS
    return [list(j) for j in OmegaConf.load(path)] if path.is_file() else []


def recorded_definition(sweep: Path) -> dict[str, Any]:
    """The definition a sweep recorded; a damaged one (a copy cut short, a disk that filled) is rebuilt from the
    config Hydra's sweeper saved beside the jobs (``multirun.yaml``), or named in one line."""
    path, source = sweep / STATE / DEFINITION, sweep / "multirun.yaml"
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(path))
        if isinstance(recorded, dict) and recorded.keys() == {"experiment", "overrides", "sweeper"}:
            return recorded
        why = "not a sweep definition"
    except Exception as err:  # YAML's parser and scanner errors
        why = one_line(err).split(" in ")[0]
    try:
        rebuilt = definition(OmegaConf.load(source))
    except Exception as err:
        raise ConfigError(
            f"{path} is damaged ({why}) and {source} cannot rebuild it ({one_line(err).split(' in ')[0]});"
            " restore the file from a copy, or start a new sweep without resume="
        ) from None
    atomic_write(path, lambda f: f.write(OmegaConf.to_yaml(rebuilt).encode()))
    print(f"note: {path} was damaged ({why}); rebuilt from {source}", file=sys.stderr, flush=True)
    return rebuilt


class SweepState(Callback):
    """Locks a sweep's directory while it runs; its recorded definition must match a resume, and stop a new sweep."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir)).resolve()
        dry = config.get("dry_run")
        try:
            if not dry:  # the output directory too: a sweeper may keep state there before any job runs (Optuna's)
                for directory in (sweep, Path(config.paths.output_dir)):
                    directory.mkdir(parents=True, exist_ok=True)
                lock_run_dir(sweep, clean=False)
            if not dry or (sweep / STATE / DEFINITION).is_file():  # a dry run checks a resume, writes nothing
                self._check(config, sweep)
        except Exception as err:  # Hydra would only warn and go on, unlocked or unchecked: stop in one line
            unlock_run_dir(sweep)
            exit_with(err if isinstance(err, ConfigError) else f"sweep {sweep}: {one_line(err)}")
        if not dry:
            # after a kill: checkpoints a stacked group's journal completed go in place, half-written ones are dropped
            for journal in (sweep / STATE).glob("journal-*.json"):
                roll_forward(journal)
            for pending in sweep.glob(f"*/checkpoints/.*{FileSet.PENDING}"):
                pending.unlink()
            # Which launcher runs this attempt (a resume may use another), for the jobs' MLflow tags.
            launcher = str(config.hydra.launcher.get("_target_") or "").rsplit(".", 1)[-1]
            (sweep / STATE / LAUNCHER).write_text(launcher + "\n")

    def _check(self, config: DictConfig, sweep: Path) -> None:
        recorded_path = sweep / STATE / DEFINITION
        resume = config.get("resume")
        if recorded_path.is_file():
            if not resume:
                raise ConfigError(
                    f"{sweep} holds a sweep already; finish it with the same command and resume=auto"
                    f" (or resume={sweep}), or start a new one with another hydra.sweep.dir"
                )
            why = difference(recorded_definition(sweep), definition(config))
            if why is not None:
                raise ConfigError(
                    f"resume={resume}: {sweep} is another sweep ({why}); run the command it ran (see"
                    f" {recorded_path}) to finish it, or drop resume= to start a new sweep"
                )
            return
        # a job directory holding what a run wrote (more than Hydra's files and the job's log)
        ran = [d for d in sweep.iterdir() if d.is_dir() and d.name != STATE]
        used = [
            d.name for d in ran if any(p.name not in (".hydra", ".lock") and p.suffix != ".log" for p in d.iterdir())
        ]
        if used:
            raise ConfigError(
                f"{sweep} holds the jobs of an earlier run ({used[0]}, ...); pass another hydra.sweep.dir, or"
                " move them away"
            )
        atomic_write(recorded_path, lambda f: f.write(OmegaConf.to_yaml(definition(config)).encode()))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        unlock_run_dir(Path(str(config.hydra.sweep.dir)).resolve())
