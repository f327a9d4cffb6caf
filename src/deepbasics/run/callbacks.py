"""Callbacks of our own; everything else comes from Lightning."""

from __future__ import annotations

import signal
import sys
import threading

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from deepbasics.reports.figures import FitPlot, draw_fit
from deepbasics.run.rng import rng_states, set_rng_states


class EpochEndCallback(L.Callback):
    """For work at the end of training epochs: a resumed run first replays the restored epoch's end,
    when nothing has trained yet; ``replayed`` tells that epoch end apart."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step

    def replayed(self, trainer: L.Trainer) -> bool:
        return trainer.global_step == self._start_step


class ConsoleLog(EpochEndCallback):
    """One line per validation interval and at the end, like the tutorials' print of the cost."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self.replayed(trainer):
            return
        if step % pl_module.hparams.val_every and step < trainer.max_steps:  # interrupted: it says so itself
            return
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k} {float(v):.6g}" for k, v in sorted(metrics.items()) if k.endswith(("/loss", "/acc")))
        width = len(str(trainer.max_steps))
        print(f"epoch {step:>{width}}/{trainer.max_steps}  {shown}", flush=True)


class Figures(EpochEndCallback):
    """The fit figure into TensorBoard every ``every`` epochs during training (0: none); the last epoch's
    figure is drawn after training by ``save_figures``."""

    def __init__(self, every: int, gap=None):
        self.every, self.gap = every, gap  # gap: the OptimumGap callback, for the optimum line
        self.plot: FitPlot | None = None  # laid out once, redrawn at every figure

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and step < trainer.max_steps and not self.replayed(trainer):
            x, y = trainer.datamodule.splits["train"]
            if self.plot is None:
                self.plot = FitPlot(pl_module.is_classifier, getattr(pl_module, "num_classes", 1), [x], [y])
            report = self.gap.report if self.gap is not None else None
            draw_fit(pl_module, x, y, step, trainer.loggers, report, self.plot)


class ScheduledEarlyStopping(EpochEndCallback, EarlyStopping):
    """Lightning's EarlyStopping, checking only fresh validations: not the restored epoch's end that a
    resumed run replays (its metrics are not there yet), nor an epoch end a signal cut off the val_every
    grid (no validation ran there: counting the last one again would shift the patience)."""

    def _fresh(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        step = trainer.global_step
        on_grid = step % pl_module.hparams.val_every == 0 or step >= trainer.max_steps
        return on_grid and not self.replayed(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fresh(trainer, pl_module):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fresh(trainer, pl_module):
            super().on_validation_end(trainer, pl_module)


class ScheduledCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint on the tutorial-epoch clock: saves (best by monitor, and last) when
    ``global_step`` reaches a multiple of ``every_n_steps`` and at the final step, after that step's
    validation, so "best" is always chosen on fresh metrics and last.ckpt always holds the finished model."""

    def __init__(self, *args, every_n_steps: int = 1, **kwargs):
        # Lightning's own triggers off: this class decides when.
        super().__init__(*args, every_n_epochs=0, every_n_train_steps=0, save_on_train_epoch_end=True, **kwargs)
        self.every_n_steps = every_n_steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # A resumed run starts from a saved step; Lightning replays that epoch's end, which must not save again.
        self._last_global_step_saved = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        scheduled = step % self.every_n_steps == 0 or step >= trainer.max_steps
        if not (scheduled or trainer.should_stop) or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if scheduled:
            self._save_topk_checkpoint(trainer, candidates)
        # A stop between scheduled epochs (Ctrl-C, SIGTERM) saves last.ckpt only: resume=auto continues from it.
        self._save_last_checkpoint(trainer, candidates)


class GracefulStop(L.Callback):
    """Ctrl-C or SIGTERM while training: finish the current step, save last.ckpt, stop (``received`` says
    which signal came). A second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own SIGTERM handler (which would raise mid-epoch) and instead of it;
        # Lightning restores the original handlers at teardown, on_train_end does it for SIGINT too.
        if threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        self._trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class RunState(L.Callback):
    """Puts the run's resolved config into every checkpoint (evaluate, predict and resume rebuild the run
    from it, predict without Lightning) and carries the random generators' state across a resume."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["deepbasics"] = {"config": self.config, "classifier": pl_module.is_classifier}
        standardization = getattr(trainer.datamodule, "standardization", None)
        if standardization is not None:  # predict and evaluate apply these, not statistics of their own
            checkpoint["deepbasics"]["standardization"] = standardization
        stopped = stopped_early(trainer)
        if stopped:  # a resume of this checkpoint finishes the run instead of training on
            checkpoint["deepbasics"]["stopped"] = stopped

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        set_rng_states(state_dict["rng"])


def stopped_early(trainer: L.Trainer) -> dict | None:
    """{"epoch", "reason"} when a callback (EarlyStopping, a user's) ended training before ``epochs``; None
    when training runs on, ran to the end, or a signal stopped it (that is an interruption, not a finish)."""
    signalled = any(isinstance(c, GracefulStop) and c.received is not None for c in trainer.callbacks)
    if not trainer.should_stop or signalled or trainer.global_step >= trainer.max_steps:
        return None
    reasons = [getattr(c, "stopping_reason_message", None) for c in trainer.callbacks]
    reason = next((r for r in reasons if r), "a callback set trainer.should_stop")
    return {"epoch": trainer.global_step, "reason": reason.removesuffix(" Signaling Trainer to stop.")}


class EpochClockLRMonitor(LearningRateMonitor):
    """Lightning's LearningRateMonitor with its points on the tutorial-epoch axis (Lightning's own x here
    would count validation chunks): the learning rate at the start of every chunk and at the end."""

    def on_train_batch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        pass

    def on_train_epoch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        self._log_at(trainer, trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_at(trainer, trainer.global_step)

    def _log_at(self, trainer: L.Trainer, step: int) -> None:
        stats = self._extract_stats(trainer, "any")
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=step)


class EpochProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar counting the run's epochs (full-batch steps), with rate, ETA and the current
    train loss; the module moves it at every logged point (``show_epoch``). Lightning's per-batch and
    validation bars stay hidden: a Lightning epoch here is a chunk of ``val_every`` epochs."""

    def __init__(self, name: str = "train") -> None:
        super().__init__()
        self.name = name

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=trainer.max_steps, initial=trainer.global_step, unit="epoch", dynamic_ncols=True,
            desc=self.name, file=sys.stdout, smoothing=0.1, disable=self.is_disabled,
        )  # fmt: skip

    def show_epoch(self, step: int, scalars: dict[str, float]) -> None:
        bar = getattr(self, "_bar", None)
        if bar is None or step < bar.n:
            return
        bar.update(step - bar.n)
        bar.set_postfix({k.split("/", 1)[1]: f"{v:.4g}" for k, v in scalars.items() if k == "train/loss"})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
            self._bar = None

    # the bars Lightning would draw per batch and per validation: none
    def on_train_epoch_start(self, *args, **kwargs) -> None:
        pass

    def on_train_batch_end(self, *args, **kwargs) -> None:
        pass

    def on_train_epoch_end(self, *args, **kwargs) -> None:
        pass

    def on_validation_start(self, *args, **kwargs) -> None:
        pass

    def on_validation_batch_start(self, *args, **kwargs) -> None:
        pass

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        pass

    def on_validation_end(self, *args, **kwargs) -> None:
        pass
