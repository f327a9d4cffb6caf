"""DataModules holding each split in memory as two tensors, served without a DataLoader (one costs more per step than
these nets' whole step). What needs a whole split (fit figure, optimum, stacked sweeps) asks ``whole_splits``."""

from __future__ import annotations

import functools
import logging
from typing import Any, Protocol, runtime_checkable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from deepbasics.errors import ConfigError, one_line

log = logging.getLogger(__name__)
warn_once = functools.cache(log.warning)  # a stacked group's jobs of one table: one line, not one each

MEASURE_ROWS = 65_536  # measuring a split: slices this large keep memory bounded and torchmetrics' calls few


@runtime_checkable
class WholeSplits(Protocol):
    """A DataModule holding its whole splits in memory (after ``setup``)."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # x (N, features), y (N, 1): float32, on the CPU
    standardization: dict | None  # {"mean", "std"} the inputs were scaled by (kept in checkpoints), or None

    def batches(self, split: str) -> Any:  # the split as this process measures it, on the training device
        ...


def whole_splits(datamodule) -> WholeSplits | None:
    """The datamodule, set up, when it offers its whole splits; None for any other LightningDataModule."""
    if not isinstance(datamodule, WholeSplits):
        return None
    try:
        datamodule.setup("fit")
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # the values it was given, which no check of its own caught
        raise ConfigError(f"data ({type(datamodule).__name__}): {one_line(err)}; check its arguments") from None
    return datamodule


def split_names(datamodule) -> list[str]:
    """The splits a DataModule has: its whole splits, or train and each of val and test it has a loader for."""
    splits = whole_splits(datamodule)
    if splits is not None:
        return list(splits.splits)
    return ["train"] + [s for s in ("val", "test") if is_overridden(f"{s}_dataloader", datamodule)]


def check_finite(values, where: str, fix: str) -> None:
    """A ConfigError naming the first cell of a table (rows, columns) that is not a finite number."""
    bad = torch.nonzero(~torch.isfinite(torch.as_tensor(values)))
    if len(bad):
        row, column = bad[0].tolist()
        raise ConfigError(f"{where} row {row}, column {column} is {float(values[row, column])}; {fix}")


class Standardize(torch.nn.Module):
    """(x - mean) / std per feature (training split's statistics); also put before a net that predicts from raw rows."""

    def __init__(self, stats: dict):
        super().__init__()
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Slices:
    """A split in slices of ``size`` rows (one slice for ``size`` None): full batches, validation and test."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int | None):
        self.x, self.y, self.size = x, y, size or max(x.shape[-2], 1)  # rows: x (N, features), a group's (K, N, ...)

    def __len__(self) -> int:
        return -(-self.x.shape[-2] // self.size)

    def __iter__(self):
        if 0 < self.x.shape[-2] <= self.size:  # the split itself: a full batch is the same tensor at every epoch
            yield self.x, self.y
            return
        for start in range(0, self.x.shape[-2], self.size):
            yield self.x[..., start : start + self.size, :], self.y[..., start : start + self.size, :]


class ShuffledPass(Slices):
    """Training rows in shuffled ``batch_size`` slices, ordered by seed and epoch alone (a resume repeats them).
    Under DDP a process takes every world_size-th row, its loss weighted by its share: DDP's mean is the batch's."""

    def __init__(self, datamodule: InMemoryDataModule):
        super().__init__(*datamodule.rows("train", shard=False), datamodule.batch_size)
        self.datamodule = datamodule

    def __iter__(self):
        x, y, trainer = self.x, self.y, self.datamodule.trainer
        order = self.datamodule.epoch_order(trainer, x.shape[-2]).to(x.device)  # a stacked group's: (jobs, rows)
        rank, world = trainer.global_rank, trainer.world_size
        for start in range(0, x.shape[-2], self.size):
            rows = order[..., start : start + self.size]
            mine = rows[..., rank::world, None]  # this process's share of the batch (alone: all of it, weighted 1)
            yield x.take_along_dim(mine, -2), y.take_along_dim(mine, -2), mine.shape[-2] * world / rows.shape[-1]


class InMemoryDataModule(L.LightningDataModule):
    """Subclasses give splits as arrays (``make_splits``), held as float32 tensors, targets (N, 1); ``batch_size`` None:
    one full-batch step per epoch. ``standardize``: scale by the training split's (or a checkpoint's) mean and std."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.standardization: dict | None = None
        self._placed: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def batch_size(self) -> int | None:
        return self.hparams.get("batch_size")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        size = self.batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ConfigError(f"data.batch_size={size!r} must be a positive integer (rows per step) or null")
        for name, (x, y) in self.make_splits().items():
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
            x = x.reshape(-1, 1) if x.ndim == 1 else x
            y = torch.as_tensor(np.asarray(y, dtype=np.float32)).reshape(-1, 1)
            if len(x) != len(y):
                raise ConfigError(f"data.{name}: x has {len(x)} rows but y has {len(y)}; give one target per row")
            if len(x) == 0:
                raise ConfigError(f"data.{name} is empty; give it at least one row")
            for part, values in (("x", x), ("y", y)):
                check_finite(values, f"data.{name} {part}", "every value must be a finite number: fix or drop that row")
            self.splits[name] = (x, y)
        if self.hparams.get("standardize") or self.standardization is not None:
            if self.standardization is None:  # from the training split only: nothing of val or test leaks in
                x = self.splits["train"][0].double()
                std = x.std(0, unbiased=False)
                std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column is centred only
                self.standardization = {"mean": x.mean(0).tolist(), "std": std.tolist()}
            scale = Standardize(self.standardization)
            self.splits = {name: (scale(x), y) for name, (x, y) in self.splits.items()}
        elif "standardize" in self.hparams:  # it is offered (a CSV): say so where columns' scales lie far apart
            spread = self.splits["train"][0].std(0)
            spread = spread[spread > 0]  # a constant column aside
            if len(spread) and spread.max() > 100 * spread.min():
                warn_once(
                    f"data: the input columns' spreads run from {spread.min():.3g} to {spread.max():.3g}; pass"
                    " data.standardize=true to scale them (unscaled, training is slow or its loss runs away)"
                )

    def rows(self, split: str, shard: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's rows of ``split``, placed once on the training device (CPU outside a fit): under DDP every
        world_size-th row (full batches in equal shards: the mean gradient is the batch's); all, unless ``shard``."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None and shard else (0, 1)
        key = (split, str(device), rank, world)
        if key not in self._placed:
            x, y = self.splits[split]
            if world > 1:
                if split == "train" and self.batch_size is None and len(x) % world:
                    raise ConfigError(
                        f"data.train has {len(x)} rows, which {world} processes cannot share equally;"
                        f" use a number of devices that divides {len(x)}"
                    )
                x, y = x[rank::world], y[rank::world]
            self._placed[key] = (x.to(device), y.to(device))
        return self._placed[key]

    def epoch_order(self, trainer: L.Trainer, rows: int) -> torch.Tensor:
        """The order of this epoch's training rows, by the data's seed and the epoch alone (a resume repeats it); in
        order under Lightning's overfit_batches, which takes the first batches, as it does with a DataLoader."""
        if trainer.overfit_batches:
            return torch.arange(rows)
        seed = int(self.hparams.get("seed", 0)) * 1_000_003 + trainer.current_epoch
        return torch.randperm(rows, generator=torch.Generator().manual_seed(seed))

    def batches(self, split: str) -> Slices:
        """``split`` as this process measures it: its shard, in slices (one for full batches)."""
        return Slices(*self.rows(split), max(self.batch_size, MEASURE_ROWS) if self.batch_size else None)

    def train_dataloader(self):
        return Slices(*self.rows("train"), None) if self.batch_size is None else ShuffledPass(self)

    def val_dataloader(self):
        return self.batches("val") if "val" in self.splits else []

    def test_dataloader(self):
        return self.batches("test") if "test" in self.splits else []
