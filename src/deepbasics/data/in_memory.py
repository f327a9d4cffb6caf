"""The base of every DataModule here: splits held in memory as tensors and served to Lightning's own loop.

With full batches (the tutorials) a tutorial epoch is one optimizer step on the whole training split, and
one Lightning epoch holds the steps up to the next validation (``schedule.val_every``): Lightning's work at
each epoch end (validation, checkpoints) then runs once per validation, not once per step. With
``data.batch_size`` a Lightning epoch is one pass over the training rows in shuffled slices. Either way the
data stay two tensors per split, sliced in place: a DataLoader over a TensorDataset would cost more per
step than these models' whole step."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from deepbasics.config.schema import SPLITS, Schedule
from deepbasics.errors import ConfigError

# Measuring a split needs no small batches: slices of at least this many rows keep memory bounded while
# keeping the per-slice cost of torchmetrics' updates off large splits.
MEASURE_ROWS = 65_536


class Standardize(torch.nn.Module):
    """(x - mean) / std per feature, with the training split's mean and std (``stats`` as stored in
    checkpoints: {"mean": [...], "std": [...]}): the data's transform, also put before a net that predicts."""

    def __init__(self, stats: dict):
        super().__init__()
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class StepsToValidation:
    """The full training batch once per tutorial epoch, up to the next validation: one Lightning epoch.
    It has no length on purpose: Lightning ends the epoch when it runs out and validates there, so the
    last epoch of a run (or the first after a resume between validations) can be shorter."""

    def __init__(self, datamodule: FullBatchDataModule):
        self.datamodule = datamodule

    def __iter__(self):
        dm = self.datamodule
        step, schedule = dm.trainer.global_step, dm.schedule
        x, y = dm.rows("train")
        for _ in range(min(schedule.val_every - step % schedule.val_every, schedule.epochs - step)):
            yield x, y


class ShuffledPass:
    """One pass over the training rows in shuffled slices of ``batch_size`` (the last one shorter). The
    order is a permutation drawn from the data's seed and the pass number alone, so a resumed run repeats
    it. Under DDP every process holds all rows and takes every world_size-th row of each batch, with its
    share of the batch (rows here x processes / rows in the batch): weighting its mean loss by that share
    makes DDP's average of the processes' gradients the whole batch's, even for an uneven last batch."""

    def __init__(self, datamodule: FullBatchDataModule):
        self.datamodule = datamodule

    def __len__(self) -> int:
        return self.datamodule.steps_per_epoch

    def __iter__(self):
        dm = self.datamodule
        trainer = dm.trainer
        x, y = dm.rows("train")
        generator = torch.Generator().manual_seed(int(dm.hparams.get("seed", 0)) * 1_000_003 + trainer.current_epoch)
        order = torch.randperm(len(x), generator=generator).to(x.device)
        rank, world, size = trainer.global_rank, trainer.world_size, dm.batch_size
        for start in range(0, len(x), size):
            rows = order[start : start + size]
            if world == 1:
                yield x[rows], y[rows]
            else:
                mine = rows[rank::world]
                yield x[mine], y[mine], len(mine) * world / len(rows)


class Slices:
    """A split in slices of ``size`` rows (one slice for ``size`` None): validation and test batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int | None):
        self.x, self.y, self.size = x, y, size or max(len(x), 1)

    def __len__(self) -> int:
        return -(-len(self.x) // self.size)

    def __iter__(self):
        for start in range(0, len(self.x), self.size):
            yield self.x[start : start + self.size], self.y[start : start + self.size]


def placed_batch(batch, device: torch.device):
    """Lightning's transfer_batch_to_device for data placed on the training device already (``rows``):
    the batch as it is, where Lightning's own move would walk it at every step to find that out."""
    from lightning.pytorch.utilities import move_data_to_device

    return batch if batch[0].device == device else move_data_to_device(batch, device)


class FullBatchDataModule(L.LightningDataModule):
    """Subclasses return their splits as arrays; this class turns them into float32 tensors, targets (N, 1),
    and serves them to the run's ``schedule`` (set by ``deepbasics.run.build``)."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # {"mean", "std"} when features are standardized: from the training split, or given (a checkpoint's)
        self.standardization: dict | None = None
        self.schedule: Schedule | None = None
        self._placed: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def make_splits(self) -> dict[str, tuple[Any, Any]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for name, (x, y) in self.make_splits().items():
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
            x = x.reshape(-1, 1) if x.ndim == 1 else x
            y = torch.as_tensor(np.asarray(y, dtype=np.float32)).reshape(-1, 1)
            if len(x) != len(y):
                raise ConfigError(f"data.{name}: x has {len(x)} rows but y has {len(y)}; give one target per row")
            if len(x) == 0:
                raise ConfigError(f"data.{name} is empty; give it at least one row")
            for part, values in (("x", x), ("y", y)):
                bad = torch.nonzero(~torch.isfinite(values))
                if len(bad):
                    row, col = bad[0].tolist()
                    raise ConfigError(
                        f"data.{name} {part} row {row}, column {col} is {values[row, col].item()};"
                        " every value must be a finite number: fix or drop that row"
                    )
            self.splits[name] = (x, y)
        size = self.batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ConfigError(f"data.batch_size={size!r} must be a positive integer (rows per step) or null")
        if self.hparams.get("standardize") or self.standardization is not None:
            self._standardize()

    def _standardize(self) -> None:
        if self.standardization is None:  # from the training split only: nothing of val or test leaks in
            x = self.splits["train"][0].double()
            std = x.std(0, unbiased=False)
            std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column is centred, not divided
            self.standardization = {"mean": x.mean(0).tolist(), "std": std.tolist()}
        scale = Standardize(self.standardization)
        self.splits = {name: (scale(x), y) for name, (x, y) in self.splits.items()}

    def overfit(self, rows: int) -> None:
        """Keep the first ``rows`` training rows and validate and test on them too (debug=overfit): a
        model that cannot drive that loss toward 0 has a bug, not too little data."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
            raise ConfigError(f"overfit_rows={rows!r} must be a positive integer")
        x, y = self.splits["train"]  # a split of fewer rows overfits on all of them
        self.splits = {split: (x[:rows], y[:rows]) for split in SPLITS}

    @property
    def in_features(self) -> int:
        self.setup()
        return self.splits["train"][0].shape[1]

    def has(self, split: str) -> bool:
        self.setup()
        return split in self.splits

    @property
    def batch_size(self) -> int | None:
        """data.batch_size: None for the tutorials' one full-batch step per epoch, else rows per step."""
        return self.hparams.get("batch_size")

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one tutorial epoch: one full batch, or the batches of a pass."""
        if self.batch_size is None:
            return 1
        return -(-len(self.splits["train"][0]) // self.batch_size)

    def epochs_done(self, global_step: int) -> int:
        """Lightning's optimizer steps in tutorial epochs."""
        return global_step // self.steps_per_epoch

    def ends_lightning_epoch(self, global_step: int) -> bool:
        """Whether the step that brought training to ``global_step`` ended a Lightning epoch."""
        if self.batch_size is not None:
            return global_step % self.steps_per_epoch == 0
        return global_step % self.schedule.val_every == 0 or global_step >= self.schedule.epochs

    def rows(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's rows of ``split`` on the training device (the CPU outside a fit), placed once.
        Under DDP each process takes every world_size-th row, so equal shards make the mean of the ranks'
        mean gradients the full-batch gradient; with mini-batches every process keeps all training rows
        (it takes its part of each batch, ``ShuffledPass``)."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if split == "train" and self.batch_size is not None:
            rank, world = 0, 1
        key = (split, str(device), rank, world)
        if key not in self._placed:
            x, y = self.splits[split]
            if world > 1:
                if split == "train" and len(x) % world:
                    raise ConfigError(
                        f"data.train has {len(x)} rows, which {world} processes cannot share equally;"
                        f" use a number of devices that divides {len(x)}"
                    )
                x, y = x[rank::world], y[rank::world]
            self._placed[key] = (x.to(device), y.to(device))
        return self._placed[key]

    def measured_rows(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows this process measures of ``split``: its shard (under DDP with mini-batches every
        process holds all training rows, so it measures every world_size-th one, as with full batches)."""
        x, y = self.rows(split)
        trainer = self.trainer
        if split == "train" and self.batch_size is not None and trainer is not None and trainer.world_size > 1:
            return x[trainer.global_rank :: trainer.world_size], y[trainer.global_rank :: trainer.world_size]
        return x, y

    def slices(self, split: str) -> Slices:
        """``split`` as this process measures it, in slices (one for full batches)."""
        size = max(self.batch_size, MEASURE_ROWS) if self.batch_size else None
        return Slices(*self.measured_rows(split), size)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return placed_batch(batch, device)

    def train_dataloader(self):
        return StepsToValidation(self) if self.batch_size is None else ShuffledPass(self)

    def val_dataloader(self):
        return self.slices("val") if self.has("val") else []

    def test_dataloader(self):
        return self.slices("test") if self.has("test") else []


class StackedSplits(L.LightningDataModule):
    """The data of K jobs trained as one stacked model (``models.stacked``): each split as one batch with a
    leading job axis, x (K, N, features) and y (K, N, 1). Jobs that share one DataModule share its tensors
    (a view, no copy). Full batches only, on the same schedule as a run of its own."""

    def __init__(self, datamodules: list[FullBatchDataModule], schedule: Schedule):
        super().__init__()
        self.schedule = schedule
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for split in datamodules[0].splits:
            parts = [dm.splits[split] for dm in datamodules]
            if all(p is parts[0] for p in parts):
                x, y = parts[0]
                self.splits[split] = (x.expand(len(parts), *x.shape), y.expand(len(parts), *y.shape))
            else:
                self.splits[split] = (torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]))
        self._placed: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    batch_size = None
    steps_per_epoch = 1
    epochs_done = FullBatchDataModule.epochs_done
    ends_lightning_epoch = FullBatchDataModule.ends_lightning_epoch

    def has(self, split: str) -> bool:
        return split in self.splits

    def rows(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if (split, str(device)) not in self._placed:
            x, y = self.splits[split]
            self._placed[split, str(device)] = (x.to(device), y.to(device))
        return self._placed[split, str(device)]

    measured_rows = rows

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return placed_batch(batch, device)

    def train_dataloader(self):
        return StepsToValidation(self)

    def val_dataloader(self):
        return Slices(*self.rows("val"), None) if self.has("val") else []
