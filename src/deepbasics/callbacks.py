"""Callbacks of our own; everything else comes from Lightning."""

from __future__ import annotations

import lightning as L


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
