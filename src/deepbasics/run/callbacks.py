"""Callbacks of our own, on Lightning's public hooks; checkpointing, early stopping and the learning-rate
monitor are Lightning's own classes (configured in conf/callbacks)."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, ProgressBar

from deepbasics.reports.figures import FitPlot, draw_fit
from deepbasics.run.rng import rng_states, set_rng_states


def epochs_done(trainer: L.Trainer) -> int:
    """Tutorial epochs trained so far."""
    return trainer.datamodule.epochs_done(trainer.global_step)


class ConsoleLog(L.Callback):
    """One line per validation interval and at the end, like the tutorials' print of the cost: the run's
    losses and accuracies, or for a stacked group of jobs its ``monitor`` metric's best, median and worst."""

    def __init__(self, monitor: str | None = None, mode: str = "min", labels: list[str] | None = None):
        self.monitor, self.mode, self.labels = monitor, mode, labels

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule, done = trainer.datamodule.schedule, epochs_done(trainer)
        if trainer.is_global_zero and (done % schedule.val_every == 0 or done >= schedule.epochs):
            shown = self._group(pl_module) if self.labels is not None else self._run(trainer)
            print(f"epoch {done:>{len(str(schedule.epochs))}}/{schedule.epochs}  {shown}", flush=True)

    @staticmethod
    def _run(trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics
        return "  ".join(f"{k} {float(v):.6g}" for k, v in sorted(metrics.items()) if k.endswith(("/loss", "/acc")))

    def _group(self, group) -> str:
        line = f"{len(self.labels)} jobs"
        values, alive = group.latest.get(self.monitor), group.alive()
        if values is not None and alive:
            ranked = sorted(alive, key=lambda k: float(values[k]), reverse=self.mode == "max")
            best, worst = ranked[0], ranked[-1]
            median = statistics.median(float(values[k]) for k in alive)
            line += (
                f"  {self.monitor} best {float(values[best]):.6g} (#{self.labels[best]})  median {median:.6g}"
                f"  worst {float(values[worst]):.6g} (#{self.labels[worst]})"
            )
        failed = len(self.labels) - len(alive)
        return line + (f"  {failed} failed" if failed else "")


class EpochProgressBar(ProgressBar):
    """A live bar on a terminal, counting tutorial epochs with rate, ETA and the latest train loss."""

    def __init__(self, name: str = "train") -> None:
        super().__init__()
        self.name, self.enabled, self.bar = name, True, None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=trainer.datamodule.schedule.epochs, initial=epochs_done(trainer), unit="epoch",
            dynamic_ncols=True, desc=self.name, file=sys.stdout, smoothing=0.1, disable=not self.enabled,
        )  # fmt: skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        done = epochs_done(trainer)
        if done > self.bar.n:
            if (trainer.global_step - 1) % trainer.log_every_n_steps == 0:  # the module logged after the last step
                self._loss(trainer)
            self.bar.update(done - self.bar.n)

    def _loss(self, trainer: L.Trainer) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self.bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self._loss(trainer)
            self.bar.close()
            self.bar = None


class Figures(L.Callback):
    """The fit figure into TensorBoard every ``every`` epochs during training (0: none); the last epoch's
    figure is drawn after training by ``save_figures``."""

    def __init__(self, every: int, gap=None, title: str = ""):
        self.every, self.gap = every, gap  # gap: the OptimumGap callback, for the optimum line
        self.title = title  # the run's (reports.figures.run_title)
        self.plot: FitPlot | None = None  # laid out once, redrawn at every figure

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        done = epochs_done(trainer)
        if self.every and done % self.every == 0 and done < trainer.datamodule.schedule.epochs:
            x, y = trainer.datamodule.splits["train"]
            if self.plot is None:
                self.plot = FitPlot(pl_module.is_classifier, getattr(pl_module, "num_classes", 1), x, y)
            report = self.gap.report if self.gap is not None else None
            draw_fit(pl_module, x, y, trainer.global_step, trainer.loggers, report, self.plot, done, self.title)


class SignalStop(Exception):
    """Training stopped at a whole step after Ctrl-C or SIGTERM, with last.ckpt saved."""

    def __init__(self, signum: int, saved: list[str]):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.saved = signum, saved


class LastCheckpoint(Checkpoint):
    """last.ckpt holds the state training stopped in, whatever stopped it, so that ``resume=`` continues
    from there and loses at most one checkpoint interval to a kill:

    - at each checkpoint interval: ModelCheckpoint writes last.ckpt only beside a checkpoint it keeps (one
      that improved on the best, for save_top_k=1); this writes it when ModelCheckpoint did not;
    - Ctrl-C or SIGTERM: training stops at the next whole step (with mini-batches, at the end of the pass),
      saves last.ckpt and raises ``SignalStop``; a step that ends a Lightning epoch first runs that epoch's
      validation and checkpoints, so a resumed run repeats nothing and skips nothing. A second signal
      stops at once;
    - the end of training (the last epoch, or an early stop), when it falls between intervals.

    A Checkpoint callback, so Lightning runs it after ModelCheckpoint at an epoch end. ``targets`` gives
    (ModelCheckpoint, last.ckpt path) for every ModelCheckpoint that keeps a last.ckpt (``save_last``)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, targets: Callable[[L.Trainer], list[tuple[ModelCheckpoint, str]]] | None = None) -> None:
        self.targets = targets or last_checkpoints
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own SIGTERM handler, and instead of it (it would stop after the
        # current step's validation, with no checkpoint); restored when training ends.
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Within a Lightning epoch of full batches; an epoch's last step waits for its end.
        if trainer.datamodule.batch_size is None and not trainer.datamodule.ends_lightning_epoch(trainer.global_step):
            self._stop_if_signalled(trainer)
        commit(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_signalled(trainer)
        self.save(trainer, due=True)
        commit(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        self.save(trainer)
        commit(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        received = self.received or 0
        if trainer.world_size > 1:  # a signal may reach one rank only: every rank stops at the same step
            flag = torch.tensor(float(received), device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max"))
        if received:
            saved = self.save(trainer)
            commit(trainer)
            raise SignalStop(received, saved)

    def save(self, trainer: L.Trainer, due: bool = False) -> list[str]:
        """Write each target's last.ckpt that does not hold this step yet (``due``: only those whose
        checkpoint interval ends at this epoch); the paths that hold it now."""
        paths = []
        for callback, path in self.targets(trainer):
            if due and not (callback.every_n_epochs and (trainer.current_epoch + 1) % callback.every_n_epochs == 0):
                continue
            if not written_at(trainer, path):
                trainer.save_checkpoint(path)
            paths.append(path)
        return paths

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def commit(trainer: L.Trainer) -> None:
    """The checkpoints of this hook written as one, for a CheckpointIO that writes several files together
    (a stacked group's, ``run.group``); a run's own CheckpointIO writes each at once."""
    io = trainer.strategy.checkpoint_io
    if hasattr(io, "commit"):
        io.commit()


def last_checkpoints(trainer: L.Trainer) -> list[tuple[ModelCheckpoint, str]]:
    """(ModelCheckpoint, its last.ckpt, named as it names it) of every ModelCheckpoint that keeps one."""
    metrics = trainer.callback_metrics
    return [
        (callback, callback.format_checkpoint_name(metrics, callback.CHECKPOINT_NAME_LAST))
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.save_last
    ]


def written_at(trainer: L.Trainer, path: str) -> bool:
    """Whether ``path`` already holds this step (the run's CheckpointIO records what it wrote; with
    save_last=link, last.ckpt links to a checkpoint that may). Under DDP only rank 0 writes, so every rank
    writes again rather than decide apart."""
    written = getattr(trainer.strategy.checkpoint_io, "written", {})
    return trainer.world_size == 1 and written.get(os.path.realpath(path)) == trainer.global_step


class RunState(L.Callback):
    """Puts the run's resolved config into every checkpoint (evaluate, predict and resume rebuild the run
    from it, predict without Lightning) and carries the random generators' state across a resume."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["deepbasics"] = self.state(trainer, pl_module.is_classifier, trainer.datamodule)

    def state(self, trainer: L.Trainer, classifier: bool, datamodule) -> dict:
        """What deepbasics keeps in a checkpoint beside Lightning's own keys."""
        state = {"config": self.config, "classifier": classifier, "epochs": epochs_done(trainer)}
        standardization = getattr(datamodule, "standardization", None)
        if standardization is not None:  # predict and evaluate apply these, not statistics of their own
            state["standardization"] = standardization
        stopped = stopped_early(trainer)
        if stopped:  # a resume of this checkpoint finishes the run instead of training on
            state["stopped"] = stopped
        return state

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        set_rng_states(state_dict["rng"])


def stopped_early(trainer: L.Trainer) -> dict | None:
    """{"epoch", "reason"} when a callback (EarlyStopping, a user's) ended training before ``epochs``; None
    when training runs on or ran to the end (a signal is an interruption, ``SignalStop``, not a finish)."""
    done = epochs_done(trainer)
    if not trainer.should_stop or done >= trainer.datamodule.schedule.epochs:
        return None
    reasons = [getattr(c, "stopping_reason_message", None) for c in trainer.callbacks]
    reason = next((r for r in reasons if r), "a callback set trainer.should_stop")
    return {"epoch": done, "reason": reason.removesuffix(" Signaling Trainer to stop.")}
