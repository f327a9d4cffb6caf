"""Checkpoints: written so that a crash cannot half-finish them, read back with weights_only=True."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from deepbasics.config.paths import check_checkpoint_path
from deepbasics.errors import ConfigError
from deepbasics.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill at any moment leaves either the old
    checkpoint or the new one, never a truncated file (Lightning's own save may copy across filesystems)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A deepbasics checkpoint, loaded with weights_only=True; a ConfigError naming the problem otherwise."""
    path = check_checkpoint_path(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{key}={path} is not a readable checkpoint ({reason}); it may be truncated") from None
    if not isinstance(checkpoint, dict) or "deepbasics" not in checkpoint:
        raise ConfigError(f"{key}={path} was not written by deepbasics-train; pass one of its checkpoints")
    return checkpoint
