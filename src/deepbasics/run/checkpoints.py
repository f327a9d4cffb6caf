"""Checkpoints: written so that a crash cannot half-finish them, read back with weights_only=True."""

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
from deepbasics.models.nets import upgrade_state_dict


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill at any moment leaves either the old
    checkpoint or the new one, never a truncated file (Lightning's own save may copy across filesystems).
    Read back with weights_only=True and brought up to date (``upgrade``), so a resume of a checkpoint of an
    earlier release continues it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[str, int] = {}  # path -> the global_step it holds (run.callbacks.LastCheckpoint)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))
        self.written[os.path.realpath(path)] = checkpoint.get("global_step")

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(path, key="resume")


# Class paths of earlier releases -> today's: a checkpoint stores the config it was trained with.
RENAMED_TARGETS = {
    "deepbasics.modules.": "deepbasics.models.lightning_modules.",
    "deepbasics.callbacks.": "deepbasics.run.callbacks.",
}
# The releases whose module ran its own loop clocked Lightning's callbacks with subclasses of their own.
OLD_CALLBACKS = {
    "ScheduledCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
    "ScheduledEarlyStopping": "lightning.pytorch.callbacks.EarlyStopping",
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
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        beside = path.parent / "checkpoints" / "last.ckpt"
        instead = f"its run directory, {key}={path.parent}" if beside.is_file() else "its run's checkpoints/last.ckpt"
        raise ConfigError(
            f"{key}={path} holds a net's weights alone (the model.pt a run exports for plain PyTorch), not a"
            f" checkpoint; pass {instead}, or load it in Python with deepbasics.load_model"
        )
    if not isinstance(checkpoint, dict) or "deepbasics" not in checkpoint:
        raise ConfigError(f"{key}={path} was not written by deepbasics-train; pass one of its checkpoints")
    return upgrade(checkpoint)


# Module arguments of the releases whose module ran its own loop: the schedule, now the Trainer's.
OLD_SCHEDULE_ARGUMENTS = ("epochs", "log_every", "val_every")


def upgrade(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an earlier release in today's form, in this one place: class paths and parameter
    names renamed since, and the module's schedule arguments dropped. The releases whose module ran its own
    loop inside one Lightning step counted tutorial epochs in ``global_step``; their loop state is brought
    to Lightning's own (``deepbasics.compat``), and ``deepbasics.epochs`` (tutorial epochs trained) is set."""
    state = checkpoint["deepbasics"]
    if "config" in state:
        state["config"] = _renamed_targets(state["config"])
    if "state_dict" in checkpoint:
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"], prefix="net.")
    for key in OLD_SCHEDULE_ARGUMENTS:
        (checkpoint.get("hyper_parameters") or {}).pop(key, None)
    if "epochs" not in state:  # written by the module's own loop
        from deepbasics.compat import loops_of_own_loop

        if "config" in state:
            _config_of_own_loop(state["config"])
        state["epochs"] = int(checkpoint.get("global_step", 0))
        state["own_loop"] = True
        if "loops" in checkpoint:
            checkpoint["loops"] = loops_of_own_loop(checkpoint["loops"], state["epochs"])
    return checkpoint


def _operand(err: BaseException) -> str:
    found = re.search(r"Unsupported operand \d+", str(err))
    return found.group().lower() if found else "an instruction it does not take"


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _config_of_own_loop(config: dict) -> None:
    """A config of the releases whose module ran its own loop, on Lightning's: their callbacks as
    Lightning's own classes on the same schedule (the checkpoints every ckpt_every epochs, now Lightning
    epochs of val_every), and without the Trainer settings the run now sets itself."""
    from deepbasics.config.schema import SET_BY_THE_RUN

    for key in set(config.get("trainer") or {}) & set(SET_BY_THE_RUN):
        del config["trainer"][key]
    for conf in (config.get("callbacks") or {}).values():
        old = str(conf.get("_target_", "")).rsplit(".", 1)[-1]
        if conf.get("_target_", "").startswith("deepbasics.") and old in OLD_CALLBACKS:
            conf["_target_"] = OLD_CALLBACKS[old]
            if old == "ScheduledCheckpoint":
                every = config["ckpt_every"] // config["val_every"]
                conf.update(every_n_epochs=every, save_on_train_epoch_end=True, enable_version_counter=False)


def _renamed_targets(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: _renamed_targets(v) for k, v in config.items()}
    if isinstance(config, str):
        for old, new in RENAMED_TARGETS.items():
            if config.startswith(old):
                return new + config[len(old) :]
    return config
