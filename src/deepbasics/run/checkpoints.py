"""Checkpoints: written so that a crash cannot half-finish them, read back with weights_only=True."""

from __future__ import annotations

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
from deepbasics.models.nets import upgrade_state_dict


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill at any moment leaves either the old
    checkpoint or the new one, never a truncated file (Lightning's own save may copy across filesystems)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


# Class paths of earlier releases -> today's: a checkpoint stores the config it was trained with.
RENAMED_TARGETS = {
    "deepbasics.modules.": "deepbasics.models.lightning_modules.",
    "deepbasics.callbacks.": "deepbasics.run.callbacks.",
}


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A deepbasics checkpoint, loaded with weights_only=True and brought to today's names; a ConfigError
    naming the problem otherwise."""
    path = check_checkpoint_path(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's safe unpickler names the object it refused as a GLOBAL; other refusals are damaged bytes.
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:  # damaged bytes, or a pickle instruction the safe loader does not take (protocol 4+)
            raise ConfigError(
                f"{key}={path} is corrupt or was not written by deepbasics (the safe loader stopped at"
                f" {_operand(err)}); it was not loaded; pass another checkpoint"
            ) from None
        raise ConfigError(
            f"{key}={path} holds objects other than tensors and plain values ({found.group(1)}), so it was not"
            " loaded: loading it could run code. deepbasics never writes such files; never disable this check for"
            " a file you did not make"
        ) from None
    except (OSError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise ConfigError(
            f"{key}={path} is truncated or corrupt ({_first_line(err)}); pass another checkpoint"
        ) from None
    if not isinstance(checkpoint, dict) or "deepbasics" not in checkpoint:
        raise ConfigError(f"{key}={path} was not written by deepbasics-train; pass one of its checkpoints")
    # Names of earlier releases, brought to today's (Lightning's own loads go through on_load_checkpoint).
    if "config" in checkpoint["deepbasics"]:
        checkpoint["deepbasics"]["config"] = _renamed_targets(checkpoint["deepbasics"]["config"])
    if "state_dict" in checkpoint:
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"], prefix="net.")
    return checkpoint


def _operand(err: BaseException) -> str:
    found = re.search(r"Unsupported operand \d+", str(err))
    return found.group().lower() if found else "an instruction it does not take"


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _renamed_targets(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: _renamed_targets(v) for k, v in config.items()}
    if isinstance(config, str):
        for old, new in RENAMED_TARGETS.items():
            if config.startswith(old):
                return new + config[len(old) :]
    return config
