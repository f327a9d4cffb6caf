"""Evaluate and predict from a checkpoint: the model and data are rebuilt from the config stored in it."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from deepbasics.checkpoint_io import read_checkpoint
from deepbasics.errors import ConfigError
from deepbasics.modules import FullBatchModule
from deepbasics.results import by_stage, results_table, write_json
from deepbasics.training import build_datamodule


def load_run(ckpt_path: str) -> tuple[FullBatchModule, DictConfig, int]:
    """The trained module (eval mode), the run's config, and the epoch the checkpoint was saved at."""
    checkpoint = read_checkpoint(ckpt_path)
    config = OmegaConf.create(checkpoint["deepbasics"]["config"])
    module_cls = get_class(config.model._target_)
    module = module_cls.load_from_checkpoint(Path(ckpt_path).expanduser(), map_location="cpu", weights_only=True)
    return module.eval(), config, int(checkpoint["global_step"])


def evaluate(cfg: DictConfig) -> dict:
    """Metrics of one split (test when the run has one, else train) with the checkpoint's weights."""
    torch.set_num_threads(cfg.threads)
    module, config, epochs = load_run(cfg.ckpt_path)
    datamodule = build_datamodule(config)
    split = cfg.split if cfg.split != "auto" else ("test" if datamodule.has("test") else "train")
    if not datamodule.has(split):
        raise ConfigError(f"split={split}: this run's data has only {', '.join(datamodule.splits)}; pick one")
    module.eval_split = split
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(module, dataloaders=datamodule._loader(split), verbose=False)
    metrics = by_stage(trainer.callback_metrics)[split]
    out_dir = Path(cfg.paths.run_dir)
    write_json(
        out_dir / "metrics.json",
        {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "experiment": config.name, "epochs": epochs, split: metrics},
    )
    from rich.console import Console

    console = Console()
    console.print(f"{config.name} at epoch {epochs}: {cfg.ckpt_path}", soft_wrap=True)
    console.print(results_table({split: metrics}))
    console.print(f"written to {out_dir / 'metrics.json'}", soft_wrap=True)
    return metrics


def predict(cfg: DictConfig) -> list[float]:
    """Probabilities (classifiers) or values (regression) for each input row, as one line of JSON."""
    torch.set_num_threads(cfg.threads)
    module, _, _ = load_run(cfg.ckpt_path)
    width = module.hparams.net["in_features"]
    x = read_inputs(cfg.inputs, width)
    with torch.no_grad():
        predictions = module.predictions(module(x))[:, 0].tolist()
    print(json.dumps({"predictions": predictions}), flush=True)
    return predictions


def read_inputs(inputs, width: int) -> torch.Tensor:
    """Rows of features from an inline list (``[[2, 2], [5, 4]]``; ``[1, 2, 3]`` for one feature) or a
    numeric CSV file with one row per input and no label column."""
    if isinstance(inputs, str):
        path = Path(inputs).expanduser()
        if not path.is_file():
            raise ConfigError(f"inputs={inputs}: no such file; pass a CSV path or a list like [[2,2],[5,4]]")
        try:
            rows = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except ValueError as err:
            raise ConfigError(f"inputs={inputs}: {err}") from None
    else:
        values = OmegaConf.to_container(inputs) if OmegaConf.is_config(inputs) else inputs
        try:
            rows = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            raise ConfigError(f"inputs={values!r}: give numbers, one list per row, e.g. [[2,2],[5,4]]") from None
        if rows.ndim == 1:
            rows = rows.reshape(-1, 1) if width == 1 else rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[1] != width or len(rows) == 0:
        shape = "x".join(map(str, rows.shape))
        raise ConfigError(f"inputs have shape {shape}, the model takes rows of {width} features; give N x {width}")
    return torch.from_numpy(rows)
