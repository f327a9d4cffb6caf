"""The training run behind `deepbasics-train`: the run's parts (``build``) -> fit -> test -> metrics.json,
checkpoints, model.pt, figures and TensorBoard events in the run directory."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from deepbasics.config.run_dir import resumed_checkpoint
from deepbasics.config.schema import Schedule, validate_train_config
from deepbasics.errors import ConfigError, Interrupted, RunFailed, one_line
from deepbasics.models.optimum import OptimumGap
from deepbasics.reports.figures import save_figures
from deepbasics.reports.metrics import by_stage, optimum_line, read_json, results_table, write_json
from deepbasics.run.build import build_datamodule, build_model, build_trainer
from deepbasics.run.callbacks import GracefulStop
from deepbasics.run.checkpoints import read_checkpoint
from deepbasics.run.resume import resumed_config


def train(cfg: DictConfig) -> float:
    """Fit (or continue), test, write metrics.json; return the final value of ``cfg.monitor.metric``.
    A failure is recorded in metrics.json too (never over an existing one) and re-raised for the caller."""
    run_dir = Path(cfg.paths.run_dir)
    try:
        return _train(cfg, run_dir)
    except Interrupted as err:
        _record_status(run_dir, cfg, "interrupted", str(err), epochs=err.epoch)
        raise
    except RunFailed as err:
        _record_status(run_dir, cfg, "failed", str(err), failed_at_epoch=err.epoch)
        raise
    except Exception as err:
        _record_status(run_dir, cfg, "failed", one_line(err))
        raise


def _train(cfg: DictConfig, run_dir: Path) -> float:
    ckpt_path, start_step = None, 0
    if cfg.get("resume"):
        ckpt_path = resumed_checkpoint(run_dir, cfg.resume)
        cfg, start_step = resumed_config(cfg, ckpt_path)
    validate_train_config(cfg)  # the effective config: a resumed run's is the one stored in its checkpoint
    if ckpt_path is not None:
        if start_step >= cfg.epochs:
            return _already_finished(cfg, run_dir, start_step)
        print(f"resuming {ckpt_path} at epoch {start_step}/{cfg.epochs}", flush=True)
    schedule = Schedule.of(cfg)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, schedule, datamodule)
    if not datamodule.has(cfg.monitor.metric.split("/")[0]):
        raise ConfigError(
            f"monitor.metric={cfg.monitor.metric} but the data has no such split; monitor train/loss instead"
        )
    trainer = build_trainer(cfg, schedule, run_dir, start_step)

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except RunFailed as err:
        raise RunFailed(
            f"{err}; {_last_good(run_dir)}; a smaller model.optimizer.lr usually helps", err.epoch
        ) from None
    if trainer.should_stop and trainer.global_step < cfg.epochs:  # every rank agrees (the loop syncs the flag)
        received = _callback(trainer, GracefulStop).received or signal.SIGINT
        raise Interrupted(
            f"{signal.Signals(received).name}: stopped at epoch {trainer.global_step}/{cfg.epochs} and saved"
            f" {run_dir / 'checkpoints'}/last.ckpt; continue with: deepbasics-train experiment={cfg.name} resume=auto",
            code=128 + received,
            epoch=trainer.global_step,
        )
    final = dict(trainer.callback_metrics)
    if datamodule.has("test"):
        trainer.test(model, datamodule=datamodule, verbose=False)
        final.update(trainer.callback_metrics)
    optimum = _callback(trainer, OptimumGap).report
    stages = by_stage(final)
    monitored = float(final[cfg.monitor.metric])
    if not trainer.is_global_zero:  # under DDP, the files are rank 0's to write
        return monitored
    # The tutorials' model.pt: the plain net's state_dict, loadable into a fresh nets.<Class>.
    torch.save(model.net.state_dict(), run_dir / "model.pt")
    save_figures(run_dir, trainer, model, optimum, _log_hparams(trainer, cfg, stages))
    checkpoint = trainer.checkpoint_callback
    write_json(
        run_dir / "metrics.json",
        {
            **_identity(cfg, run_dir, "completed"),
            "epochs": trainer.global_step,
            "monitor": {"metric": cfg.monitor.metric, "value": monitored},
            **stages,
            "optimum": optimum,
            "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
        },
    )
    _report(cfg, stages, optimum, run_dir)
    return monitored


def _callback(trainer: L.Trainer, kind: type):
    return next(c for c in trainer.callbacks if isinstance(c, kind))


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, stages: dict) -> Path | None:
    """The TensorBoard hparams tab: this run's settings beside its real final metrics (hp/<stage>_<name>,
    also as scalars at the final epoch). Returns the TensorBoard directory, if there is one."""
    from torch.utils.tensorboard.summary import hparams

    settings = {"experiment": cfg.name, "seed": cfg.seed, "epochs": cfg.epochs}
    for group in ("net", "optimizer"):
        for key, value in cfg.model[group].items():
            if isinstance(value, (int, float, str, bool)):
                settings[f"{group}.{key}"] = value
    for key, value in cfg.data.items():
        if key != "_target_" and isinstance(value, (int, float, str, bool)):
            settings[f"data.{key}"] = value
    metrics = {f"hp/{stage}_{name}": value for stage, values in stages.items() for name, value in values.items()}
    directory = None
    for logger in trainer.loggers:
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            logger.log_metrics(metrics, step=trainer.global_step)
            for summary in hparams(settings, metrics):
                logger.experiment.file_writer.add_summary(summary)
            logger.experiment.flush()
            directory = Path(logger.log_dir)
    return directory


def _last_good(run_dir: Path) -> str:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint had been saved yet"
    return f"kept the last good checkpoint, {last} (epoch {read_checkpoint(last)['global_step']})"


def _identity(cfg: DictConfig, run_dir: Path, status: str) -> dict:
    return {"experiment": cfg.get("name"), "seed": cfg.get("seed"), "status": status, "run_dir": str(run_dir)}


def _record_status(run_dir: Path, cfg: DictConfig, status: str, message: str, **extra) -> None:
    """metrics.json for a run that did not complete, never over a completed one: a failed resume or
    extension must not erase what the run had finished before."""
    path = run_dir / "metrics.json"
    if rank_zero_only.rank != 0 or not run_dir.is_dir():
        return
    if path.exists() and read_json(path).get("status") == "completed":
        return
    write_json(path, {**_identity(cfg, run_dir, status), "error": message, **extra})


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
