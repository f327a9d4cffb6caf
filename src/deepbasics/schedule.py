"""The user speaks in tutorial epochs (full-batch steps); Lightning counts its own epochs, each of which
runs ``log_every`` of those steps. This is the one place that converts between them."""

from __future__ import annotations

import math
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
        for key in ("val_every", "ckpt_every"):
            if getattr(self, key) % self.log_every:
                raise ConfigError(
                    f"{key}={getattr(self, key)} must be a multiple of log_every={self.log_every}"
                    f" (training runs log_every epochs between logs)"
                )

    @property
    def lightning_epochs(self) -> int:
        return math.ceil(self.epochs / self.log_every)

    def lightning_interval(self, every: int) -> int:
        return every // self.log_every

    def validates_at_end(self) -> bool:
        """Whether Lightning's own validation schedule already lands on the final epoch."""
        return self.lightning_epochs % self.lightning_interval(self.val_every) == 0
