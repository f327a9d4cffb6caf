"""Reading and writing checkpoints: writes a crash cannot half-finish, reads that explain what is wrong."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from deepbasics.errors import ConfigError
from deepbasics.resume import looks_like_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill at any moment leaves either the old
    checkpoint or the new one, never a truncated file (Lightning's own save may copy across filesystems)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = os.fspath(path)
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".ckpt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A deepbasics checkpoint, loaded with weights_only=True; a ConfigError naming the problem otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file; pass a .ckpt from a run's checkpoints/ directory")
    if not looks_like_checkpoint(path):
        raise ConfigError(f"{key}={path} is not a readable checkpoint (not a torch archive, or a truncated one)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{key}={path} is not a readable checkpoint ({reason}); it may be truncated") from None
    if not isinstance(checkpoint, dict) or "deepbasics" not in checkpoint:
        raise ConfigError(f"{key}={path} was not written by deepbasics-train; pass one of its checkpoints")
    return checkpoint
