"""Data written inline in the config, as the tutorials write their tensors."""

from __future__ import annotations

from deepbasics.config.settings import SPLITS
from deepbasics.data.in_memory import InMemoryDataModule
from deepbasics.errors import ConfigError


class ToyDataModule(InMemoryDataModule):
    """x and y written inline in the config; ``val`` and ``test`` are optional splits of the same form."""

    def __init__(
        self,
        train: dict,
        val: dict | None = None,
        test: dict | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the run's flat settings instead

    def make_splits(self):
        given = {name: self.hparams[name] for name in SPLITS if self.hparams[name] is not None}
        for name, split in given.items():
            if not isinstance(split, dict) or set(split) != {"x", "y"}:
                raise ConfigError(f"data.{name} must be a mapping with x and y lists, got {split!r}")
        return {name: (split["x"], split["y"]) for name, split in given.items()}
