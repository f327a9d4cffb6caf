"""Which run a `resume=` value continues. Light on purpose: the run directory is chosen while Hydra
composes the config, before torch loads."""

from __future__ import annotations

from pathlib import Path

from deepbasics.errors import ConfigError

LAST = Path("checkpoints") / "last.ckpt"


def resumed_run_dir(output_dir: str, name: str, resume: str | None) -> Path | None:
    """The directory a resumed run keeps writing into; None for a fresh run (or a loose .ckpt file)."""
    if resume in (None, ""):
        return None
    if resume == "auto":
        root = Path(output_dir) / "runs" / name
        runs = sorted(d for d in root.glob("*") if (d / LAST).is_file()) if root.is_dir() else []
        if not runs:
            raise ConfigError(f"resume=auto: no run of {name} with {LAST} under {root}; train one without resume first")
        return runs[-1].resolve()  # names start with the start time, so the last one is the latest
    path = Path(resume).expanduser().resolve()
    if path.is_dir():
        if not (path / LAST).is_file():
            raise ConfigError(f"resume={resume}: {path} has no {LAST}; pass a run directory that saved a checkpoint")
        return path
    if path.is_file():
        return path.parent.parent if path.parent.name == "checkpoints" else None
    raise ConfigError(f"resume={resume}: no such run directory or checkpoint file; pass resume=auto or a real path")


def resumed_checkpoint(run_dir: Path, resume: str) -> Path:
    """The checkpoint to continue from: the one named, or the run directory's last.ckpt."""
    path = Path(resume).expanduser()
    return path.resolve() if path.is_file() else run_dir / LAST
