"""Callbacks of our own; everything else comes from Lightning."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from deepbasics.rng import rng_states, set_rng_states


class ConsoleLog(L.Callback):
    """One line every ``every`` full-batch epochs and at the end, like the tutorials' print of the cost."""

    def __init__(self, every: int, epochs: int):
        self.every, self.epochs = every, epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step % self.every and step != self.epochs:
            return
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k} {float(v):.6g}" for k, v in sorted(metrics.items()) if k.endswith(("/loss", "/acc")))
        print(f"epoch {step:>{len(str(self.epochs))}}/{self.epochs}  {shown}", flush=True)


class ScheduledCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, also saving at the final epoch, which ``every_n_epochs`` may miss
    (301 epochs checkpointed every 100): last.ckpt must always hold the finished model."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        final = trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if (
            final
            and self._last_global_step_saved != trainer.global_step
            and not self._should_skip_saving_checkpoint(trainer)
        ):
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
