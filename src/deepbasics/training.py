"""The training run behind `deepbasics-train`: config -> DataModule, LightningModule, Trainer -> fit -> test
-> metrics.json, checkpoints, model.pt and TensorBoard events in the run directory."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deepbasics.callbacks import ConsoleLog, RunState
from deepbasics.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from deepbasics.errors import ConfigError
from deepbasics.optimum import OptimumGap
from deepbasics.results import by_stage, optimum_line, read_json, results_table, write_json
from deepbasics.resume import resumed_checkpoint
from deepbasics.schedule import Schedule

# Lightning's advice for DataLoader-fed training does not apply to one in-memory batch per epoch.
for _message in (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*LeafSpec.*",
    ".*length of `list` across ranks is zero.*",
    ".*Checkpoint directory .* exists and is not empty.*",  # a resumed run writes where it left off
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
    model = instantiate(
        cfg.model,
        _convert_="all",
        epochs=schedule.epochs,
        log_every=schedule.log_every,
        val_every=schedule.val_every,
    )
    wanted = model.hparams.net["in_features"]
    if wanted != datamodule.in_features:
        raise ConfigError(
            f"model.net.in_features={wanted} but the data has {datamodule.in_features} features;"
            f" set model.net.in_features={datamodule.in_features}"
        )
    return model


def build_trainer(cfg: DictConfig, schedule: Schedule, run_dir: Path, start_step: int = 0) -> L.Trainer:
    callbacks = [ConsoleLog(), OptimumGap()]
    callbacks.append(RunState(OmegaConf.to_container(cfg, resolve=True)))
    # Directories come from run_dir here, not from the config: the config travels inside checkpoints, and a
    # resumed or evaluated run must never write into the directory of the run it was copied from.
    checkpointing = {"dirpath": str(run_dir / "checkpoints"), "every_n_steps": schedule.ckpt_every}
    for name, conf in (cfg.get("callbacks") or {}).items():
        callbacks.append(instantiate(conf, **(checkpointing if name == "model_checkpoint" else {})))
    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        extra = {"save_dir": str(run_dir)}
        if start_step and conf._target_.endswith("TensorBoardLogger"):
            # A resumed run hides what the interrupted one logged after its checkpoint: no doubled points.
            extra["purge_step"] = start_step + 1
        loggers.append(instantiate(conf, **extra))
    trainer = instantiate(
        cfg.trainer,
        **schedule.trainer_kwargs(),
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )
    # deterministic=True also fills every new tensor with NaN to expose reads of uninitialised memory,
    # which costs these tiny nets a quarter of their step time; the algorithms stay deterministic.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return trainer


def schedule_of(cfg: DictConfig) -> Schedule:
    return Schedule(epochs=cfg.epochs, log_every=cfg.log_every, val_every=cfg.val_every, ckpt_every=cfg.ckpt_every)


def train(cfg: DictConfig) -> float:
    """Fit (or continue), test, write metrics.json; return the final value of ``cfg.monitor.metric``."""
    run_dir = Path(cfg.paths.run_dir)
    ckpt_path, start_step = None, 0
    if cfg.get("resume"):
        ckpt_path = resumed_checkpoint(run_dir, cfg.resume)
        cfg, start_step = resumed_config(cfg, ckpt_path)
        if start_step >= cfg.epochs:
            return _already_finished(cfg, run_dir, start_step)
        print(f"resuming {ckpt_path} at epoch {start_step}/{cfg.epochs}", flush=True)
    schedule = schedule_of(cfg)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, schedule, datamodule)
    if not datamodule.has(cfg.monitor.metric.split("/")[0]):
        raise ConfigError(
            f"monitor.metric={cfg.monitor.metric} but the data has no such split; monitor train/loss instead"
        )
    trainer = build_trainer(cfg, schedule, run_dir, start_step)

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    final = dict(trainer.callback_metrics)
    if datamodule.has("test"):
        trainer.test(model, datamodule=datamodule, verbose=False)
        final.update(trainer.callback_metrics)
    # The tutorials' model.pt: the plain net's state_dict, loadable into a fresh nets.<Class>.
    torch.save(model.net.state_dict(), run_dir / "model.pt")

    optimum = next(c for c in trainer.callbacks if isinstance(c, OptimumGap)).report
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
    _report(cfg, stages, optimum, run_dir)
    return monitored if math.isfinite(monitored) else float("nan")


def resumed_config(cfg: DictConfig, ckpt_path: Path) -> tuple[DictConfig, int]:
    """The config the checkpoint was trained with, plus this command line's value overrides (epochs=3000
    extends a run), and the epoch it stopped at."""
    checkpoint = read_checkpoint(ckpt_path, key="resume")
    resumed = OmegaConf.create(checkpoint["deepbasics"]["config"])
    for key, value in _command_line_values():
        OmegaConf.update(resumed, key, value, merge=False)
    resumed.resume = cfg.resume
    resumed.paths.run_dir = cfg.paths.run_dir
    return resumed, int(checkpoint["global_step"])


def _command_line_values() -> list[tuple[str, object]]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return []
    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    values = []
    for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
        key = override.key_or_group
        if key in ("resume", "experiment") or override.is_hydra_override():
            continue
        if key in groups:
            raise ConfigError(f"{key}={override.value()} cannot change on resume; start a new run instead")
        values.append((key, override.value()))
    return values


def _already_finished(cfg: DictConfig, run_dir: Path, step: int) -> float:
    print(f"{run_dir} already finished its {step} epochs; pass epochs=<more> with resume to train further")
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    return float(metrics.get("monitor", {}).get("value", float("nan")))


def _report(cfg: DictConfig, stages: dict, optimum: dict | None, run_dir: Path) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"{cfg.name}, seed {cfg.seed}, {cfg.epochs} epochs")
    console.print(results_table(stages))
    if optimum:
        console.print(optimum_line(optimum), soft_wrap=True)
    console.print(f"run directory: {run_dir}", soft_wrap=True)
