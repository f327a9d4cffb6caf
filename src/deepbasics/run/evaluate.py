"""`deepbasics-evaluate`: a checkpoint's metrics, with the model and data rebuilt from the config stored in it."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from deepbasics.data.in_memory import split_names, whole_splits
from deepbasics.errors import ConfigError
from deepbasics.reports.metrics import by_stage, results_table, write_json
from deepbasics.run.build import build_datamodule
from deepbasics.run.checkpoints import read_checkpoint


def evaluate(cfg: DictConfig) -> dict:
    """Metrics of one split (test when the run has one, else train) with the checkpoint's weights."""
    torch.set_num_threads(cfg.threads)
    checkpoint = read_checkpoint(cfg.ckpt_path)
    config = OmegaConf.create(checkpoint["deepbasics"]["config"])
    # the module from the checkpoint's plain hyperparameters (read_checkpoint checked its format)
    module = get_class(config.model._target_)(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    epochs = int(checkpoint["deepbasics"]["epochs"])
    moved = OmegaConf.select(cfg, "data.path")
    if moved is not None:  # the run's CSV file, now elsewhere
        if "path" not in config.data:
            raise ConfigError(f"data.path={moved}: this run's data is not a CSV file ({config.data._target_}); drop it")
        config.data.path = os.path.abspath(os.path.expanduser(str(moved)))
    datamodule = build_datamodule(config.data, checkpoint["deepbasics"].get("standardization"))
    splits = whole_splits(datamodule)
    width = checkpoint["hyper_parameters"]["net"].get("in_features")
    if splits is not None and width is not None and splits.splits["train"][0].shape[1] != width:
        raise ConfigError(
            f"data.path={config.data.path} has {splits.splits['train'][0].shape[1]} input columns, the"
            f" model takes {width}; pass the table the run trained on"
        )
    if splits is None:
        datamodule.prepare_data()
        datamodule.setup("test")
    has = split_names(datamodule)
    split = cfg.split if cfg.split != "auto" else ("test" if "test" in has else "train")
    if split not in has:
        raise ConfigError(f"split={split}: this run's data has only {', '.join(has)}; pick one")
    module.eval_split = split
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    loader = splits.batches(split) if splits is not None else getattr(datamodule, f"{split}_dataloader")()
    trainer.test(module, dataloaders=loader, verbose=False)
    metrics = by_stage(trainer.callback_metrics)[split]
    out_dir = Path(cfg.paths.run_dir)
    write_json(
        out_dir / "metrics.json",
        {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "experiment": config.name, "epochs": epochs, split: metrics},
    )
    console = Console()
    console.print(f"{config.name} at epoch {epochs}: {cfg.ckpt_path}", soft_wrap=True)
    console.print(results_table({split: metrics}))
    console.print(f"written to {out_dir / 'metrics.json'}", soft_wrap=True)
    return metrics
