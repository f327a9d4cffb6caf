"""The user speaks in tutorial epochs (full-batch steps), and so does everything here: Lightning's
``global_step`` counts those steps and training stops at ``max_steps``. One Lightning epoch runs up to the
next multiple of ``val_every``, so validation, checkpoints and the console line fall on the same steps
whether or not the run was interrupted and resumed in between."""

from __future__ import annotations

from dataclasses import dataclass

from deepbasics.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    epochs: int
    log_every: int
    val_every: int
    ckpt_every: int

    def __post_init__(self) -> None:
        for key in ("epochs", "log_every", "val_every", "ckpt_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{key}={value!r} must be a positive integer (counted in full-batch epochs)")
        if self.val_every % self.log_every:
            raise ConfigError(f"val_every={self.val_every} must be a multiple of log_every={self.log_every}")
        if self.ckpt_every % self.val_every:
            raise ConfigError(
                f"ckpt_every={self.ckpt_every} must be a multiple of val_every={self.val_every}"
                " (the best checkpoint is chosen on fresh validation metrics)"
            )

    def trainer_kwargs(self) -> dict:
        """Lightning's loop limits: stop on the step count; validate at the end of each (chunk) epoch."""
        return {"max_steps": self.epochs, "max_epochs": -1, "check_val_every_n_epoch": 1}
