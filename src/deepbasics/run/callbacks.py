"""Our callbacks, on Lightning's public hooks (checkpointing, early stopping and the LR monitor are Lightning's own)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import statistics
import threading

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from deepbasics.models.optimum import optimum, optimum_points
from deepbasics.run.checkpoints import FORMAT


def epochs_done(trainer: L.Trainer) -> int:
    """Epochs trained, in any hook (an epoch counts as processed before its end hooks run)."""
    return trainer.fit_loop.epoch_progress.current.processed


def validates(trainer: L.Trainer, done: int) -> bool:
    """Whether the epoch that brings training to ``done`` epochs validates (or is the last)."""
    return done % trainer.check_val_every_n_epoch == 0 or done >= trainer.max_epochs


def write(loggers: list, values: dict, step: int) -> None:
    """Points straight into the loggers (Lightning writes an epoch's points after its checkpoint)."""
    for logger in loggers:
        logger.log_metrics({name: float(value) for name, value in values.items()}, step=step)


class ConsoleLog(L.Callback):
    """One line per validation, as the tutorials print the cost; for a group, the monitor's best, median and worst."""

    def __init__(self, monitor: str | None = None, mode: str = "min", labels: list[str] | None = None):
        self.monitor, self.mode, self.labels = monitor, mode, labels

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if not (trainer.is_global_zero and validates(trainer, done)):
            return
        metrics = trainer.callback_metrics
        line = "  ".join(f"{k} {float(v):.6g}" for k, v in sorted(metrics.items()) if k.endswith(("/loss", "/acc")))
        if self.labels is not None:  # a group
            values, alive = pl_module.latest.get(self.monitor), pl_module.alive()
            line = f"{len(self.labels)} jobs"
            if values is not None and alive:
                ranked = sorted(alive, key=lambda k: float(values[k]), reverse=self.mode == "max")
                median = statistics.median(float(values[k]) for k in alive)
                line += (
                    f"  {self.monitor} best {float(values[ranked[0]]):.6g} (#{self.labels[ranked[0]]})  median"
                    f" {median:.6g}  worst {float(values[ranked[-1]]):.6g} (#{self.labels[ranked[-1]]})"
                )
            line += f"  {len(self.labels) - len(alive)} failed" if len(alive) < len(self.labels) else ""
        print(f"epoch {done:>{len(str(trainer.max_epochs))}}/{trainer.max_epochs}  {line}", flush=True)


class WholeTrainSplit(L.Callback):
    """Whole in-memory data: train metrics each ``log_every`` epochs (from step 0) and the optimum's line."""

    def __init__(self, splits, log_every: int):
        self.splits, self.log_every, self.report = splits, log_every, None  # report: the optimum

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.report = optimum(pl_module, *self.splits.splits["train"])

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch == 0:  # Lightning logs after steps only: the first point goes to the loggers
            write(trainer.loggers, pl_module.measure("train", self.splits.batches("train")), 0)
            write(trainer.loggers, optimum_points(self.report), 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        done = trainer.current_epoch + 1
        if done % self.log_every == 0 or validates(trainer, done):
            values = pl_module.measure("train", self.splits.batches("train"))
            # for the monitors (checkpoints, early stopping), the console lines and Lightning's progress bar
            pl_module.log_dict(values, logger=False, prog_bar=True)
            write(trainer.loggers, values, trainer.global_step)  # the point now, before this epoch's checkpoint


# Set when a sweep process training stacked groups in workers is told to stop: they stop as after SIGTERM
STOP = multiprocessing.Event()


class SignalStop(Exception):
    """Training stopped at an epoch's end after Ctrl-C or SIGTERM, with last.ckpt saved."""

    def __init__(self, signum: int, saved: list[str]):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.saved = signum, saved


class LastCheckpoint(Checkpoint):
    """last.ckpt at each checkpoint interval (ModelCheckpoint saves it only beside a kept one), at the end, and after an
    epoch with Ctrl-C or SIGTERM (then SignalStop; a second stops at once). A Checkpoint: runs after ModelCheckpoint."""

    def __init__(self, targets=None) -> None:
        self.targets = targets or last_checkpoints
        self.received, self.previous = None, {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Instead of Lightning's SIGTERM handler (it stops without a checkpoint); restored at the end.
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        received = self.received or (signal.SIGTERM if STOP.is_set() else 0)
        if trainer.world_size > 1:  # a signal may reach one rank only: every rank stops at the same epoch
            flag = torch.tensor(float(received), device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max"))
        saved = self.save(trainer, due=not received)
        if received:
            raise SignalStop(received, saved)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_exception(trainer, pl_module, None)
        self.save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        while self.previous:  # None: a handler set outside Python, which Python can only give back as the default
            signum, handler = self.previous.popitem()
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def save(self, trainer: L.Trainer, due: bool = False) -> list[str]:
        """Each last.ckpt not holding this step yet (``due``: whose interval ends now), then this hook's checkpoints
        made visible together where the CheckpointIO holds them (a stacked group's); their paths."""
        epoch, paths, io = trainer.current_epoch + 1, [], trainer.strategy.checkpoint_io
        for _, path in self.targets(trainer, lambda c: not due or (c.every_n_epochs and epoch % c.every_n_epochs == 0)):
            # under DDP only rank 0 writes, so every rank writes again rather than decide apart
            if trainer.world_size > 1 or getattr(io, "written", {}).get(os.path.realpath(path)) != trainer.global_step:
                trainer.save_checkpoint(path)
            paths.append(path)
        if hasattr(io, "commit"):
            io.commit()
        return paths


def last_checkpoints(trainer: L.Trainer, wanted=bool) -> list[tuple[ModelCheckpoint, str]]:
    """(ModelCheckpoint, its last.ckpt, named as it names it) of every ``wanted`` ModelCheckpoint that keeps one."""
    return [
        (c, c.format_checkpoint_name(trainer.callback_metrics, c.CHECKPOINT_NAME_LAST))
        for c in trainer.checkpoint_callbacks
        if isinstance(c, ModelCheckpoint) and c.save_last and wanted(c)
    ]


def rng_states() -> dict:
    """Every random generator's state as plain values, so checkpoints keep loading with weights_only=True
    (Lightning's own collector keeps numpy's state as an ndarray, which that loader refuses)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunState(L.Callback):
    """The run's config in each checkpoint (evaluate, predict, resume rebuild from it); the RNG state across resumes."""

    def __init__(self, config: dict, standardization: dict | None = None):
        self.config, self.standardization = config, standardization

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["deepbasics"] = self.state(trainer, pl_module.is_classifier)

    def state(self, trainer: L.Trainer, classifier: bool) -> dict:
        """Ours beside Lightning's keys: the config, epochs trained, the input scale, an early stop."""
        state = {"format": FORMAT, "config": self.config, "classifier": classifier, "epochs": epochs_done(trainer)}
        extra = {"standardization": self.standardization, "stopped": stopped_early(trainer)}
        return state | {k: v for k, v in extra.items() if v is not None}

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        set_rng_states(state_dict["rng"])


def stopped_early(trainer: L.Trainer, callbacks: list | None = None) -> dict | None:
    """{"epoch", "reason"} when a callback (EarlyStopping, a user's; of ``callbacks``, by default the trainer's) ended
    training before its last epoch."""
    done = epochs_done(trainer)
    if not trainer.should_stop or done >= trainer.max_epochs:
        return None
    reasons = [getattr(c, "stopping_reason_message", None) for c in callbacks or trainer.callbacks]
    reason = next((r for r in reasons if r), "a callback set trainer.should_stop")
    return {"epoch": done, "reason": reason.removesuffix(" Signaling Trainer to stop.")}
