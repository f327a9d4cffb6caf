"""Reading checkpoints. The path checks need no torch, so a wrong path answers before torch loads."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from deepbasics.errors import ConfigError


def looks_like_checkpoint(path: Path) -> bool:
    """torch.save writes a zip archive; a truncated one has lost its central directory."""
    return zipfile.is_zipfile(path)


def check_checkpoint_path(path: str | Path, key: str = "ckpt_path") -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file; pass a .ckpt from a run's checkpoints/ directory")
    if not looks_like_checkpoint(path):
        raise ConfigError(f"{key}={path} is not a readable checkpoint (not a torch archive, or a truncated one)")
    return path


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A deepbasics checkpoint, loaded with weights_only=True; a ConfigError naming the problem otherwise."""
    import torch

    path = check_checkpoint_path(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{key}={path} is not a readable checkpoint ({reason}); it may be truncated") from None
    if not isinstance(checkpoint, dict) or "deepbasics" not in checkpoint:
        raise ConfigError(f"{key}={path} was not written by deepbasics-train; pass one of its checkpoints")
    return checkpoint
