"""Checkpoints: written so that a crash cannot half-finish them, read back with weights_only=True, and
brought up to date in one place (``upgrade``) when an earlier release wrote them."""

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
    truncated file. Read back through ``read_checkpoint``, so a resume continues an earlier release's checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[str, int] = {}  # path -> the global_step it holds (run.callbacks.LastCheckpoint)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))
        self.written[os.path.realpath(path)] = checkpoint.get("global_step")

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(path, key="resume")


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A deepbasics checkpoint, loaded with weights_only=True and upgraded; else a ConfigError naming the problem."""
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
    return upgrade(checkpoint)


# --- earlier releases, in this one place
RENAMED_TARGETS = {"deepbasics.modules.": "deepbasics.models.lightning_modules."}  # class paths since renamed
RENAMED_PARAMETERS = {"layer1.": "linear_1.", "layer2.": "linear_2."}  # the NeuralNet took the tutorial's names
NETS = "deepbasics.models.nets."
OPTIMIZERS = {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam"}


def upgrade(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """An earlier release's checkpoint in today's form for what reads its weights and config (evaluate, predict,
    ``load_model``): nets, optimizers and schedulers as ``_target_`` configs, renamed class paths and parameters. Its
    loop state stays: such a checkpoint (format below ``FORMAT``) is not resumed."""
    state = checkpoint["deepbasics"]
    if "config" in state:
        state["config"] = _renamed(state["config"])
        if state.get("format", 1) < FORMAT:
            state["config"]["model"] = upgrade_model_config(state["config"]["model"])
    if "state_dict" in checkpoint:
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"], prefix="net.")
    if state.get("format", 1) < FORMAT and "hyper_parameters" in checkpoint:
        for key in ("epochs", "log_every", "val_every"):  # the module's own loop had the schedule
            checkpoint["hyper_parameters"].pop(key, None)
        checkpoint["hyper_parameters"] = upgrade_model_config(checkpoint["hyper_parameters"])
    state.setdefault("epochs", int(checkpoint.get("global_step", 0)))  # the releases with a loop of their own
    return checkpoint


def upgrade_model_config(model: dict) -> dict:
    """A module's arguments (or its config) with the net and optimizer given by name as ``_target_`` configs,
    the net's ``init`` a module argument, and a scheduler a ``_partial_`` config."""
    model = dict(model)
    net = dict(model.get("net") or {})
    if "name" in net:
        model.setdefault("init", net.pop("init", "default"))
        net = {
            "_target_": NETS + net.pop("name"),
            **{k: v for k, v in net.items() if v is not None or k == "in_features"},
        }
        if not net["_target_"].endswith("NeuralNet"):
            net.pop("hidden_size", None)
        if net.get("out_features") == 1:
            net.pop("out_features")
        model["net"] = net
    optimizer = dict(model.get("optimizer") or {})
    if "name" in optimizer:
        model["optimizer"] = {"_target_": OPTIMIZERS[optimizer.pop("name")], "_partial_": True, **optimizer}
    if model.get("scheduler"):
        model["scheduler"] = {**model["scheduler"], "_partial_": True}
    return model


def _renamed(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: _renamed(v) for k, v in config.items()}
    return _new_prefix(config, RENAMED_TARGETS) if isinstance(config, str) else config


def _new_prefix(name: str, renames: dict[str, str], prefix: str = "") -> str:
    for old, new in renames.items():
        if name.startswith(prefix + old):
            return prefix + new + name.removeprefix(prefix + old)
    return name


def upgrade_state_dict(state: dict, prefix: str = "") -> dict:
    """``state`` with parameter names of earlier releases renamed (keys under ``prefix``)."""
    return {_new_prefix(key, RENAMED_PARAMETERS, prefix): value for key, value in state.items()}
