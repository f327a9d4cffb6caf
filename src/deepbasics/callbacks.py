"""Callbacks of our own; everything else comes from Lightning."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from deepbasics.rng import rng_states, set_rng_states


class ConsoleLog(L.Callback):
    """One line per validation interval and at the end, like the tutorials' print of the cost."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k} {float(v):.6g}" for k, v in sorted(metrics.items()) if k.endswith(("/loss", "/acc")))
        width = len(str(trainer.max_steps))
        print(f"epoch {trainer.global_step:>{width}}/{trainer.max_steps}  {shown}", flush=True)


class ScheduledCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint on the tutorial-epoch clock: saves (best by monitor, and last) when
    ``global_step`` reaches a multiple of ``every_n_steps`` and at the final step, after that step's
    validation, so "best" is always chosen on fresh metrics and last.ckpt always holds the finished model."""

    def __init__(self, *args, every_n_steps: int = 1, **kwargs):
        # Lightning's own triggers off: this class decides when.
        super().__init__(*args, every_n_epochs=0, every_n_train_steps=0, save_on_train_epoch_end=True, **kwargs)
        self.every_n_steps = every_n_steps

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        due = step % self.every_n_steps == 0 or step >= trainer.max_steps
        if due and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


class RunState(L.Callback):
    """Puts the run's resolved config into every checkpoint (evaluate, predict and resume rebuild the run
    from it) and carries the random generators' state across a resume."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["deepbasics"] = {"config": self.config}

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        set_rng_states(state_dict["rng"])
