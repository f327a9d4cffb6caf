"""Checkpoints: written so that a crash cannot half-finish them, read back with weights_only=True; an earlier
release's (another format) refused in one line."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from deepbasics.config.paths import check_checkpoint_path
from deepbasics.errors import ConfigError
from deepbasics.files import atomic_write

FORMAT = 2  # deepbasics.format of today's checkpoints: one Lightning epoch per epoch, nets by _target_


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill leaves the old checkpoint or the new one, never a
    truncated file. A resume reads it with ``read_checkpoint`` first, which says in one line what is wrong with it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[str, int] = {}  # path -> the global_step it holds (run.callbacks.LastCheckpoint)

    write = staticmethod(atomic_write)  # a stacked group's writes through its FileSet (run.group.JobCheckpointIO)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        self.write(path, lambda f: torch.save(checkpoint, f))
        self.written[os.path.realpath(path)] = checkpoint.get("global_step")


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A deepbasics checkpoint of this release, loaded with weights_only=True; else a ConfigError naming the problem."""
    path = check_checkpoint_path(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's safe unpickler names the object it refused as a GLOBAL; other refusals are damaged bytes.
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise ConfigError(
                f"{key}={path} is corrupt or was not written by deepbasics (the safe loader stopped);"
                " it was not loaded; pass another checkpoint"
            ) from None
        raise ConfigError(
            f"{key}={path} holds objects other than tensors and plain values ({found.group(1)}), so it was not"
            " loaded: loading it could run code. deepbasics never writes such files; never disable this check for"
            " a file you did not make"
        ) from None
    except (OSError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}={path} is truncated or corrupt ({first}); pass another checkpoint") from None
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        beside = path.parent / "checkpoints" / "last.ckpt"
        instead = f"its run directory, {key}={path.parent}" if beside.is_file() else "its run's checkpoints/last.ckpt"
        raise ConfigError(
            f"{key}={path} holds a net's weights alone (the model.pt a run exports for plain PyTorch), not a"
            f" checkpoint; pass {instead}, or load it in Python with deepbasics.load_model"
        )
    if not isinstance(checkpoint, dict) or "deepbasics" not in checkpoint:
        raise ConfigError(f"{key}={path} was not written by deepbasics-train; pass one of its checkpoints")
    if (made := checkpoint["deepbasics"].get("format", 1)) < FORMAT:  # nets by name, and a loop of its own
        raise ConfigError(
            f"{key}={path} was written by an earlier deepbasics release (checkpoint format {made}; this one reads"
            f" {FORMAT}): evaluate or predict with that release, or train again"
        )
    return checkpoint
