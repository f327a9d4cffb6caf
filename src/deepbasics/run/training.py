"""The training run behind `deepbasics-train`: parts built from the config (``build``), fit in Lightning's loop, the run
ended (``finish``). An epoch is one Lightning epoch: one full-batch step (the tutorials) or one pass of mini-batches."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import lightning as L
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from deepbasics.config.resolvers import config_groups
from deepbasics.config.run_dir import check_same_experiment, refuse_group_changes, resumed_checkpoint
from deepbasics.config.settings import check_settings
from deepbasics.config.sweep_dir import job_state, sweep_of
from deepbasics.data.in_memory import whole_splits
from deepbasics.errors import ConfigError, Interrupted, RunFailed, command_as_typed, one_line
from deepbasics.files import lock_run_dir, read_json, unlock_run_dir
from deepbasics.reports.metrics import write_json
from deepbasics.run import build
from deepbasics.run.callbacks import (
    ConsoleLog,
    LastCheckpoint,
    RunState,
    SignalStop,
    WholeTrainSplit,
    epochs_done,
    stopped_early,
)
from deepbasics.run.checkpoints import read_checkpoint
from deepbasics.run.finish import Run, finish


def train(cfg: DictConfig, overrides: list[str] | None = None) -> float:
    """Fit (or continue) and finish the run; return the final ``cfg.monitor.metric``. A failure is recorded in
    metrics.json (never over a finished run's) and re-raised. A resume applies the plain values of ``overrides``."""
    run_dir = Path(cfg.paths.run_dir)
    lock_run_dir(run_dir)  # first: a process that does not hold the directory writes nothing there, not even a failure
    identity = {"experiment": cfg.get("name"), "seed": cfg.get("seed"), "run_dir": str(run_dir)}
    try:
        return _train(cfg, run_dir, overrides)
    except Exception as err:  # recorded; bad input leaves an earlier record of this run (interrupted, say) as it was
        extra = {"epochs": err.epoch} if isinstance(err, Interrupted) else {}
        extra |= {"failed_at_epoch": err.epoch} if isinstance(err, RunFailed) else {}
        if not (isinstance(err, ConfigError) and (run_dir / "metrics.json").exists()):
            status = "interrupted" if isinstance(err, Interrupted) else "failed"
            record_status(run_dir, identity, status, one_line(err), **extra)
        raise
    finally:
        unlock_run_dir(run_dir)


def _train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None) -> float:
    checkpoint, ckpt_path, state = None, None, {}
    if cfg.get("resume"):
        ckpt_path = resumed_checkpoint(run_dir, cfg.resume)
        cfg, checkpoint = resumed_config(cfg, ckpt_path, overrides)
        state = checkpoint["deepbasics"]
    check_settings(cfg)  # the effective config: a resumed run's is the one stored in its checkpoint
    run = Run.of(cfg)
    done, stopped = state.get("epochs", 0), state.get("stopped")
    trained = checkpoint is not None and (done >= cfg.epochs or stopped is not None)
    if trained and job_state(run_dir)[0] == "finished":
        if stopped:
            print(f"{run_dir} stopped early at epoch {done} ({stopped['reason']}); start a new run to train further")
        else:
            print(f"{run_dir} already finished its {done} epochs; pass epochs=<more> with resume to train further")
        value = read_json(run_dir / "metrics.json")["monitor"]["value"]
        return float("nan") if value is None else float(value)
    if trained and (run_dir / "metrics.json").is_file() and not read_json(run_dir / "metrics.json"):
        print(f"{run_dir / 'metrics.json'} does not read back (cut short?); written again below", flush=True)
    if trained:
        print(f"finishing {run_dir}: training ended at epoch {done}, writing its end-of-run files", flush=True)
    elif checkpoint is not None:
        print(f"resuming {ckpt_path} at epoch {done}/{cfg.epochs}", flush=True)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)

    datamodule = build.build_datamodule(cfg.data, state.get("standardization"))
    model = build.build_model(cfg.model, datamodule)
    build.check_before_training(cfg, model, datamodule)
    loggers = build.build_loggers(cfg.get("logger"), run_dir, checkpoint["global_step"] if checkpoint else 0)
    splits, bar = whole_splits(datamodule), build.live_progress(cfg.progress)
    callbacks = [WholeTrainSplit(splits, cfg.log_every)] if splits else []
    # Lightning's TQDM bar on a terminal: its Rich bar (the default beside rich) redraws at a cost of half
    # these nets' fit when every epoch is one step
    callbacks += [L.pytorch.callbacks.TQDMProgressBar()] if bar else [ConsoleLog()]
    callbacks += [RunState(run.config, splits.standardization if splits else None)]
    callbacks += build.build_callbacks(cfg.get("callbacks"), run_dir)
    if cfg.model.get("scheduler") and loggers:  # the rate at each epoch's start
        callbacks.append(L.pytorch.callbacks.LearningRateMonitor(logging_interval="epoch"))
    callbacks.append(LastCheckpoint())
    # A trained run restores last.ckpt and fit returns at once, so the end phase measures at the step training ended.
    trainer = build.build_trainer(cfg, run_dir, callbacks, loggers, done if trained else cfg.epochs, bar)
    if not trained:
        build.start_logs(loggers, run.settings, run_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except RunFailed as err:
        raise diverged(str(err), err.epoch, run_dir) from None
    except SignalStop as stop:
        raise interruption(stop.signum, epochs_done(trainer), run, stop.saved) from None
    best = getattr(trainer.checkpoint_callback, "best_model_path", None) or None
    optimum = callbacks[0].report if splits else None
    with end_phase(run, epochs_done(trainer)):
        return finish(run, trainer, model, datamodule, stopped or stopped_early(trainer), best, optimum)


def resumed_config(cfg: DictConfig, ckpt_path: Path, overrides: list[str] | None = None) -> tuple[DictConfig, dict]:
    """A resumed run's effective config, the one stored in its checkpoint plus the plain ``key=value`` overrides of
    this command line (epochs=3000 extends a run); group changes (another model or data) are refused. And the
    checkpoint."""
    overrides = list(overrides or ())
    checkpoint = read_checkpoint(ckpt_path, key="resume")
    resumed = OmegaConf.create(checkpoint["deepbasics"]["config"])
    check_same_experiment(cfg.resume, resumed.name, overrides)
    groups = config_groups()
    refuse_group_changes(overrides, groups, Path(ckpt_path).parent.parent)  # the groups of the checkpoint's run
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.split("/")[0] not in groups | {"resume"} and not override.is_hydra_override():
            OmegaConf.update(resumed, key, override.value(), merge=False)
    resumed.resume = cfg.resume
    resumed.paths.run_dir = cfg.paths.run_dir
    return resumed, checkpoint


@contextlib.contextmanager
def end_phase(run: Run, epoch: int):
    """Ctrl-C or SIGTERM while the end-of-run files are written stops the run with a line saying a resume writes them
    (from last.ckpt), or that none can without one. Once metrics.json says finished, a signal is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame) -> None:
        if job_state(run.dir)[0] == "finished":
            return
        if not (run.dir / "checkpoints" / "last.ckpt").is_file():
            what = "no checkpoint was kept (callbacks=none or save_last=false), so they cannot be written again"
        else:
            what = f"its checkpoint is saved; write them with: {resume_command(run)}"
        raise Interrupted(
            f"{signal.Signals(signum).name}: stopped while writing the end-of-run files (metrics.json,"
            f" model.pt, figures) after training finished at epoch {epoch}/{run.epochs}; {what}",
            code=128 + signum,
            epoch=epoch,
        )

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def resume_command(run: Run) -> str:
    """The command that continues this run, as the user would type it (with its output directory when not the
    default one); a job of a sweep (whichever process trained it) continues with its sweep."""
    if sweep_of(run.dir) is not None:
        return "the same command (with -m) and resume=auto, which finishes the sweep"
    output_dir = run.config["paths"]["output_dir"]
    where = "" if str(output_dir) == "outputs" else f" paths.output_dir={output_dir}"
    return f"{command_as_typed()} experiment={run.name}{where} resume=auto"


def diverged(message: str, epoch: int, run_dir: Path) -> RunFailed:
    """The failure of a run whose loss went non-finite at ``epoch``, with where its last good state is."""
    last = run_dir / "checkpoints" / "last.ckpt"
    kept = "no checkpoint had been saved yet"
    if last.is_file():
        kept = f"kept the last good checkpoint, {last} (epoch {read_checkpoint(last)['deepbasics']['epochs']})"
    fix = "a smaller model.optimizer.lr usually helps (inputs on far-apart scales: data.standardize=true)"
    return RunFailed(f"{message}; {kept}; {fix}", epoch)


def interruption(signum: int, epoch: int, run: Run, saved: list[str]) -> Interrupted:
    """A run stopped by a signal at ``epoch``, with the checkpoint it saved and the command that continues it."""
    if saved:
        what = f" and saved {saved[0]}; continue with: {resume_command(run)}"
    else:
        what = "; no checkpoint was saved (none is configured to keep last.ckpt), so this run cannot be continued"
    message = f"{signal.Signals(signum).name}: stopped at epoch {epoch}/{run.epochs}{what}"
    return Interrupted(message, 128 + signum, epoch)


def record_status(run_dir: Path, identity: dict, status: str, message: str, **extra) -> None:
    """metrics.json for a run that did not complete, never over a finished one (a failed resume must not erase it)."""
    if rank_zero_only.rank != 0 or not run_dir.is_dir() or job_state(run_dir)[0] == "finished":
        return
    write_json(run_dir / "metrics.json", {**identity, "status": status, "error": message, **extra})
