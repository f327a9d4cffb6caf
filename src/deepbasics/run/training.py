"""The training run behind `deepbasics-train`: the run's parts (``build``) -> fit -> the end phase
(``finish``: final metrics of every split, model.pt, figures, metrics.json), with checkpoints and logger
events written along the way into the run directory."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from deepbasics.config.run_dir import resumed_checkpoint
from deepbasics.config.schema import Schedule, validate_train_config
from deepbasics.errors import ConfigError, Interrupted, RunFailed, command_as_typed, one_line
from deepbasics.files import lock_run_dir, remove_dead_writes, unlock_run_dir
from deepbasics.models.optimum import OptimumGap
from deepbasics.reports.metrics import FINISHED, read_json, write_json
from deepbasics.run.build import build_datamodule, build_model, build_trainer, start_logs
from deepbasics.run.callbacks import SignalStop, epochs_done, stopped_early
from deepbasics.run.checkpoints import read_checkpoint
from deepbasics.run.finish import finish, identity
from deepbasics.run.resume import resumed_config


def train(cfg: DictConfig, overrides: list[str] | None = None) -> float:
    """Fit (or continue) and finish the run; return the final value of ``cfg.monitor.metric``. A failure is
    recorded in metrics.json too (never over a finished run's) and re-raised for the caller. ``overrides``:
    the command line's (or the API call's), whose plain values a resume applies to the stored config."""
    run_dir = Path(cfg.paths.run_dir)
    # First: a process that does not hold the directory writes nothing into it, not even a failure.
    lock_run_dir(run_dir)
    remove_dead_writes(run_dir)  # a checkpoint a kill cut short
    try:
        return _train(cfg, run_dir, overrides)
    except Interrupted as err:
        record_status(run_dir, cfg, "interrupted", str(err), epochs=err.epoch)
        raise
    except RunFailed as err:
        record_status(run_dir, cfg, "failed", str(err), failed_at_epoch=err.epoch)
        raise
    except ConfigError as err:  # bad input: an earlier record of this run (interrupted, say) stays as it was
        if not (run_dir / "metrics.json").exists():
            record_status(run_dir, cfg, "failed", one_line(err))
        raise
    except Exception as err:
        record_status(run_dir, cfg, "failed", one_line(err))
        raise
    finally:
        unlock_run_dir(run_dir)


def _train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None) -> float:
    checkpoint = None
    if cfg.get("resume"):
        ckpt_path = resumed_checkpoint(run_dir, cfg.resume)
        cfg, checkpoint = resumed_config(cfg, ckpt_path, overrides)
        if checkpoint["deepbasics"].get("own_loop") and cfg.data.get("batch_size"):
            raise ConfigError(
                f"resume={cfg.resume}: this mini-batch checkpoint comes from an earlier release, whose loop counted"
                " passes where Lightning's counts batches, so it cannot be continued; it still evaluates and"
                " predicts, and deepbasics.load_model reads its weights"
            )
    validate_train_config(cfg)  # the effective config: a resumed run's is the one stored in its checkpoint
    done = checkpoint["deepbasics"]["epochs"] if checkpoint else 0  # tutorial epochs trained
    stopped = checkpoint["deepbasics"].get("stopped") if checkpoint else None
    trained = checkpoint is not None and (done >= cfg.epochs or stopped is not None)
    if trained and _finished(run_dir):
        return _already_finished(run_dir, done, stopped)
    if trained:
        print(f"finishing {run_dir}: training ended at epoch {done}, writing its end-of-run files", flush=True)
    elif checkpoint is not None:
        print(f"resuming {ckpt_path} at epoch {done}/{cfg.epochs}", flush=True)
    schedule = Schedule.of(cfg)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)

    standardization = checkpoint["deepbasics"].get("standardization") if checkpoint else None
    datamodule = build_datamodule(cfg, standardization, schedule)
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg, schedule, run_dir, datamodule, checkpoint)
    if trained:  # the end phase of a run whose training is done: from its final checkpoint
        model.load_state_dict(checkpoint["state_dict"])  # read_checkpoint already brought older names up to date
        best = _best_checkpoint(checkpoint)
        first = rank_zero_only.rank == 0  # under torchrun every rank finishes; rank 0 writes
        with end_phase(cfg, done, run_dir):
            return finish(cfg, run_dir, model, datamodule, trainer.loggers, checkpoint["global_step"], first,
                          stopped=stopped, best_checkpoint=best)  # fmt: skip

    start_logs(trainer.loggers, cfg, run_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path if checkpoint else None, weights_only=True)
    except RunFailed as err:
        raise diverged(str(err), err.epoch, run_dir) from None
    except SignalStop as stop:
        raise interruption(stop.signum, epochs_done(trainer), cfg, run_dir, "resume=auto", stop.saved) from None
    with end_phase(cfg, epochs_done(trainer), run_dir):
        return _finish_fit(cfg, run_dir, model, datamodule, trainer)


@contextlib.contextmanager
def end_phase(cfg: DictConfig, epoch: int, run_dir: Path):
    """Ctrl-C or SIGTERM while the end-of-run files are written: training is over, so the run stops with
    the line that says so and that a resume writes them (it does, from last.ckpt), or that it cannot when
    no last.ckpt was kept. Once metrics.json records the run as finished, only the report is left to
    print: a signal then is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame) -> None:
        if _finished(run_dir):
            return
        name = signal.Signals(signum).name
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            what = "no checkpoint was kept (callbacks=none or save_last=false), so they cannot be written again"
        else:
            what = f"its checkpoint is saved; write them with: {resume_command(cfg)}"
        raise Interrupted(
            f"{name}: stopped while writing the end-of-run files (metrics.json, model.pt, figures) after training"
            f" finished at epoch {epoch}/{cfg.epochs}; {what}",
            code=128 + signum,
            epoch=epoch,
        )

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def resume_command(cfg: DictConfig, resume: str = "resume=auto", sweep: bool | None = None) -> str:
    """The command that continues this run, as the user would type it: the script as they started it, and
    the output directory when it is not the default one (debug runs write under outputs/debug). A job of a
    sweep continues with its sweep: the same command with resume=auto (``sweep``: whether this is a job of
    one; None: Hydra's run mode says)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if sweep is None:
        sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if sweep:
        return "the same command (with -m) and resume=auto, which finishes the sweep"
    where = "" if str(cfg.paths.output_dir) == "outputs" else f" paths.output_dir={cfg.paths.output_dir}"
    return f"{command_as_typed()} experiment={cfg.name}{where} {resume}"


def _finish_fit(cfg: DictConfig, run_dir: Path, model, datamodule, trainer: L.Trainer) -> float:
    checkpointing = trainer.checkpoint_callback
    return finish(
        cfg,
        run_dir,
        model,
        datamodule,
        trainer.loggers,
        trainer.global_step,
        is_global_zero=trainer.is_global_zero,
        stopped=stopped_early(trainer),
        best_checkpoint=getattr(checkpointing, "best_model_path", None) or None,
        optimum=next((c.report for c in trainer.callbacks if isinstance(c, OptimumGap)), None),
    )


def _best_checkpoint(checkpoint: dict) -> str | None:
    """The best checkpoint's path as the checkpointing callback saved it into ``checkpoint``."""
    states = (checkpoint.get("callbacks") or {}).values()
    return next((s["best_model_path"] for s in states if isinstance(s, dict) and "best_model_path" in s), None)


def _finished(run_dir: Path) -> bool:
    path = run_dir / "metrics.json"
    return path.is_file() and read_json(path).get("status") in FINISHED


def diverged(message: str, epoch: int, run_dir: Path) -> RunFailed:
    """The failure of a run whose loss went non-finite at ``epoch``, with where its last good state is."""
    return RunFailed(f"{message}; {last_good(run_dir)}; a smaller model.optimizer.lr usually helps", epoch)


def interruption(
    signum: int, epoch: int, cfg: DictConfig, run_dir: Path, resume: str, saved: list[str], sweep: bool | None = None
) -> Interrupted:
    """A run stopped by a signal at ``epoch``, with the checkpoint it saved and the command that continues it."""
    name = signal.Signals(signum).name
    if not saved:
        return Interrupted(
            f"{name}: stopped at epoch {epoch}/{cfg.epochs}; no checkpoint was saved (none is configured to keep"
            " last.ckpt), so this run cannot be continued", code=128 + signum, epoch=epoch,
        )  # fmt: skip
    return Interrupted(
        f"{name}: stopped at epoch {epoch}/{cfg.epochs} and saved {saved[0]}; continue with:"
        f" {resume_command(cfg, resume, sweep)}",
        code=128 + signum,
        epoch=epoch,
    )


def last_good(run_dir: Path) -> str:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint had been saved yet"
    return f"kept the last good checkpoint, {last} (epoch {read_checkpoint(last)['deepbasics']['epochs']})"


def record_status(run_dir: Path, cfg: DictConfig, status: str, message: str, **extra) -> None:
    """metrics.json for a run that did not complete, never over a finished one: a failed resume or
    extension must not erase what the run had finished before."""
    if rank_zero_only.rank != 0 or not run_dir.is_dir() or _finished(run_dir):
        return
    write_json(run_dir / "metrics.json", {**identity(cfg, run_dir, status), "error": message, **extra})


def _already_finished(run_dir: Path, step: int, stopped: dict | None) -> float:
    if stopped:
        print(f"{run_dir} stopped early at epoch {step} ({stopped['reason']}); start a new run to train further")
    else:
        print(f"{run_dir} already finished its {step} epochs; pass epochs=<more> with resume to train further")
    value = read_json(run_dir / "metrics.json")["monitor"]["value"]
    return float("nan") if value is None else float(value)
