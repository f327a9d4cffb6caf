"""Checkpoint writes that a crash cannot half-finish."""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from deepbasics.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill at any moment leaves either the old
    checkpoint or the new one, never a truncated file (Lightning's own save may copy across filesystems)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))
