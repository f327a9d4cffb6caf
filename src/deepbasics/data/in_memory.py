"""The base of every DataModule here: splits held in memory as tensors and served as one full batch, the
tutorials' full-batch training."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from deepbasics.config.schema import SPLITS
from deepbasics.errors import ConfigError


class FullBatch:
    """An iterable of exactly one batch. Lightning takes any iterable; a DataLoader over a TensorDataset
    would cost more per epoch than the gradient step itself."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __iter__(self):
        yield self.x, self.y

    def __len__(self) -> int:
        return 1


class Standardize(torch.nn.Module):
    """(x - mean) / std per feature, with the training split's mean and std (``stats`` as stored in
    checkpoints: {"mean": [...], "std": [...]}): the data's transform, also put before a net that predicts."""

    def __init__(self, stats: dict):
        super().__init__()
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FullBatchDataModule(L.LightningDataModule):
    """Subclasses return their splits as arrays; this class turns them into float32 tensors, targets (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # {"mean", "std"} when features are standardized: from the training split, or given (a checkpoint's)
        self.standardization: dict | None = None

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
        x, y = self.splits["train"]
        self.splits = {split: (x[:rows], y[:rows]) for split in SPLITS}

    @property
    def in_features(self) -> int:
        self.setup()
        return self.splits["train"][0].shape[1]

    def has(self, split: str) -> bool:
        self.setup()
        return split in self.splits

    def loader(self, split: str):
        """The one-batch iterable of a split ([] when the data has no such split). In training, the tensors
        go to the device once; under DDP each rank gets every world_size-th row of it."""
        if not self.has(split):
            return []
        x, y = self.splits[split]
        trainer = self.trainer
        if trainer is not None:
            device = trainer.strategy.root_device
            x, y = x.to(device), y.to(device)
            # With mini-batches every rank keeps all training rows: it takes its part of each shuffled batch.
            if trainer.world_size > 1 and not (split == "train" and self.batch_size):
                rank, world = trainer.global_rank, trainer.world_size
                # Equal shards make the mean of the ranks' mean gradients the full-batch mean gradient.
                if split == "train" and len(x) % world:
                    raise ConfigError(
                        f"data.train has {len(x)} rows, which {world} processes cannot share equally;"
                        f" use a number of devices that divides {len(x)}"
                    )
                x, y = x[rank::world], y[rank::world]
        return FullBatch(x, y)

    @property
    def batch_size(self) -> int | None:
        """data.batch_size: None for the tutorials' one full-batch step per epoch, else rows per step."""
        return self.hparams.get("batch_size")

    def shuffled_batches(self, x: torch.Tensor, y: torch.Tensor, epoch: int):
        """One epoch of mini-batches: (this rank's rows of the batch, their targets, the batch's row count).
        The order is a permutation drawn from the run's seed and the epoch alone, so a resumed run repeats
        it exactly; under DDP each rank takes every world_size-th row of each batch."""
        generator = torch.Generator().manual_seed(int(self.hparams.get("seed", 0)) * 1_000_003 + epoch)
        order = torch.randperm(len(x), generator=generator).to(x.device)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        size = self.batch_size
        for start in range(0, len(x), size):
            rows = order[start : start + size]
            mine = rows[rank::world] if world > 1 else rows
            yield x[mine], y[mine], len(rows)

    def train_dataloader(self):
        return self.loader("train")

    def val_dataloader(self):
        return self.loader("val")

    def test_dataloader(self):
        return self.loader("test")


class StackedSplits(L.LightningDataModule):
    """The data of K jobs trained as one stacked model (``models.stacked``): each split as one batch with a
    leading job axis, x (K, N, features) and y (K, N, 1). Jobs that share one DataModule share its tensors
    (a view, no copy)."""

    def __init__(self, datamodules: list[FullBatchDataModule]):
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for split in datamodules[0].splits:
            parts = [dm.splits[split] for dm in datamodules]
            if all(p is parts[0] for p in parts):
                x, y = parts[0]
                self.splits[split] = (x.expand(len(parts), *x.shape), y.expand(len(parts), *y.shape))
            else:
                self.splits[split] = (torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]))

    def loader(self, split: str):
        if split not in self.splits:
            return []
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        x, y = self.splits[split]
        return FullBatch(x.to(device), y.to(device))

    def train_dataloader(self):
        return self.loader("train")

    def val_dataloader(self):
        return self.loader("val")
