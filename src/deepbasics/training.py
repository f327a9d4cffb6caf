"""The training run behind `deepbasics-train`: config -> DataModule, LightningModule, Trainer -> fit -> test
-> metrics.json, checkpoints and TensorBoard events in the run directory."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from deepbasics.callbacks import ConsoleLog
from deepbasics.checkpoint_io import AtomicCheckpointIO
from deepbasics.errors import ConfigError
from deepbasics.optimum import optimum_report
from deepbasics.results import by_stage, optimum_line, results_table, write_json
from deepbasics.schedule import Schedule

# Lightning's advice for DataLoader-fed training does not apply to one in-memory batch per epoch.
for _message in (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*LeafSpec.*",
    ".*length of `list` across ranks is zero.*",
):
    warnings.filterwarnings("ignore", message=_message)
# Lightning's own console handler repeats its start-up notes (accelerators, tips); the run's log file keeps them.
for _handler in logging.getLogger("lightning").handlers:
    _handler.setLevel(logging.WARNING)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup()
    return datamodule


def build_model(cfg: DictConfig, schedule: Schedule, datamodule) -> L.LightningModule:
    model = instantiate(cfg.model, _convert_="all", epochs=schedule.epochs, log_every=schedule.log_every)
    wanted = model.hparams.net["in_features"]
    if wanted != datamodule.in_features:
        raise ConfigError(
            f"model.net.in_features={wanted} but the data has {datamodule.in_features} features;"
            f" set model.net.in_features={datamodule.in_features}"
        )
    return model


def build_trainer(cfg: DictConfig, schedule: Schedule, run_dir: Path) -> L.Trainer:
    callbacks = [ConsoleLog(every=schedule.val_every, epochs=schedule.epochs)]
    ckpt_interval = {"every_n_epochs": schedule.lightning_interval(schedule.ckpt_every)}
    for name, conf in (cfg.get("callbacks") or {}).items():
        callbacks.append(instantiate(conf, **(ckpt_interval if name == "model_checkpoint" else {})))
    loggers = [instantiate(conf) for conf in (cfg.get("logger") or {}).values()]
    return instantiate(
        cfg.trainer,
        max_epochs=schedule.lightning_epochs,
        check_val_every_n_epoch=schedule.lightning_interval(schedule.val_every),
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )


def schedule_of(cfg: DictConfig) -> Schedule:
    return Schedule(epochs=cfg.epochs, log_every=cfg.log_every, val_every=cfg.val_every, ckpt_every=cfg.ckpt_every)


def train(cfg: DictConfig) -> float:
    """Fit, test, write metrics.json; return the final value of ``cfg.monitor.metric`` (for sweepers)."""
    run_dir = Path(cfg.paths.run_dir)
    schedule = schedule_of(cfg)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, schedule, datamodule)
    if not datamodule.has(cfg.monitor.metric.split("/")[0]):
        raise ConfigError(
            f"monitor.metric={cfg.monitor.metric} but the data has no such split; monitor train/loss instead"
        )
    trainer = build_trainer(cfg, schedule, run_dir)

    trainer.fit(model, datamodule=datamodule)
    if datamodule.has("val") and not schedule.validates_at_end():
        trainer.validate(model, datamodule=datamodule, verbose=False)
    final = dict(trainer.callback_metrics)
    if datamodule.has("test"):
        trainer.test(model, datamodule=datamodule, verbose=False)
        final.update(trainer.callback_metrics)

    optimum = _optimum(model, datamodule, trainer)
    stages = by_stage(final)
    monitored = float(final[cfg.monitor.metric])
    checkpoint = trainer.checkpoint_callback
    write_json(
        run_dir / "metrics.json",
        {
            "experiment": cfg.name,
            "seed": cfg.seed,
            "status": "completed",
            "epochs": trainer.global_step,
            "monitor": {"metric": cfg.monitor.metric, "value": monitored},
            **stages,
            "optimum": optimum,
            "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
            "run_dir": str(run_dir),
        },
    )
    _report(run_dir, cfg, stages, optimum)
    return monitored if math.isfinite(monitored) else float("nan")


def _optimum(model, datamodule, trainer: L.Trainer) -> dict | None:
    """The model class's best possible fit of the training data, and how far SGD got from it."""
    report = optimum_report(model.net, *datamodule.splits["train"], model.loss_fn)
    if report and "loss" in report:
        # Two points draw the optimum as a flat line across the train/loss chart's range.
        for logger in trainer.loggers:
            for step in (0, trainer.global_step):
                logger.log_metrics({"optimum/loss": report["loss"]}, step=step)
            logger.log_metrics({"gap/loss": report["loss_gap"], "gap/params": report["param_gap"]}, trainer.global_step)
    return report


def _report(run_dir: Path, cfg: DictConfig, stages: dict, optimum: dict | None) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"{cfg.name}, seed {cfg.seed}, {cfg.epochs} epochs")
    console.print(results_table(stages))
    if optimum:
        console.print(optimum_line(optimum), soft_wrap=True)
    console.print(f"run directory: {run_dir}", soft_wrap=True)
