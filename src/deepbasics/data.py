"""LightningDataModules serving whole splits as one in-memory batch, the tutorials' full-batch training."""

from __future__ import annotations

import os
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch

from deepbasics.errors import ConfigError
from deepbasics.schema import SPLITS


class FullBatch:
    """An iterable of exactly one batch. Lightning takes any iterable; a DataLoader over a TensorDataset
    would cost more per epoch than the gradient step itself."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __iter__(self):
        yield self.x, self.y

    def __len__(self) -> int:
        return 1


class FullBatchDataModule(L.LightningDataModule):
    """Subclasses return their splits as arrays; this class turns them into float32 tensors, targets (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

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
            if trainer.world_size > 1:
                rank, world = trainer.global_rank, trainer.world_size
                # Equal shards make the mean of the ranks' mean gradients the full-batch mean gradient.
                if split == "train" and len(x) % world:
                    raise ConfigError(
                        f"data.train has {len(x)} rows, which {world} processes cannot share equally;"
                        f" use a number of devices that divides {len(x)}"
                    )
                x, y = x[rank::world], y[rank::world]
        return FullBatch(x, y)

    def train_dataloader(self):
        return self.loader("train")

    def val_dataloader(self):
        return self.loader("val")

    def test_dataloader(self):
        return self.loader("test")


class ToyDataModule(FullBatchDataModule):
    """x and y written inline in the config; ``val`` and ``test`` are optional splits of the same form."""

    def __init__(self, train: dict, val: dict | None = None, test: dict | None = None):
        super().__init__()
        self.save_hyperparameters()

    def make_splits(self):
        splits = {}
        for name in SPLITS:
            split = self.hparams[name]
            if split is None:
                continue
            if not isinstance(split, dict) or set(split) != {"x", "y"}:
                raise ConfigError(f"data.{name} must be a mapping with x and y lists, got {split!r}")
            splits[name] = (split["x"], split["y"])
        return splits


class BlobsDataModule(FullBatchDataModule):
    """sklearn make_blobs around ``centers``; ``labels[i]`` is the class of points drawn around centre i.
    Each split is its own seeded draw, as the tutorial draws its train and test sets separately."""

    def __init__(
        self,
        centers: list,
        cluster_std: float = 0.3,
        n_train: int = 80,
        n_val: int = 0,
        n_test: int = 20,
        labels: list | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()

    def make_splits(self):
        from sklearn.datasets import make_blobs

        hp = self.hparams
        labels = np.asarray(hp.labels if hp.labels is not None else range(len(hp.centers)))
        if len(labels) != len(hp.centers):
            raise ConfigError(
                f"data.labels has {len(labels)} entries for {len(hp.centers)} centers; give one label per centre"
            )
        counts = {"train": hp.n_train, "val": hp.n_val, "test": hp.n_test}
        seeds = np.random.SeedSequence(hp.seed).spawn(len(SPLITS))
        splits = {}
        for name, seed in zip(SPLITS, seeds, strict=True):
            if counts[name]:
                rng = np.random.RandomState(np.random.MT19937(seed))
                x, centre = make_blobs(counts[name], centers=hp.centers, cluster_std=hp.cluster_std, random_state=rng)
                splits[name] = (x, labels[centre])
        return splits


class CSVDataModule(FullBatchDataModule):
    """A numeric CSV (no quoting); ``label_column`` holds the target. Without split fractions every row
    trains, in file order, as in the tutorial; with them a seeded shuffle carves out val and test."""

    def __init__(
        self,
        path: str,
        label_column: int = -1,
        delimiter: str = ",",
        header: bool = False,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        # Absolute, so evaluating a checkpoint later works from any directory.
        path = os.path.abspath(os.path.expanduser(str(path)))
        self.save_hyperparameters()

    def make_splits(self):
        hp = self.hparams
        if not os.path.isfile(hp.path):
            raise ConfigError(f"data.path: no file at {hp.path}; pass data.path=<csv file>")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns about an empty file; the check below says it
                table = np.loadtxt(hp.path, delimiter=hp.delimiter, skiprows=int(hp.header), dtype=np.float32, ndmin=2)
        except ValueError as err:
            # numpy's text ends in advice about its own arguments ("use usecols ..."): keep the diagnosis
            reason = str(err).split(";")[0].rstrip(".")
            raise ConfigError(
                f"data.path {hp.path}: {reason}; every cell must be a number, every row as wide"
            ) from None
        if table.size == 0:
            raise ConfigError(f"data.path {hp.path} has no rows; give a CSV with data (header={hp.header})")
        if table.shape[1] < 2:
            raise ConfigError(f"data.path {hp.path} has one column; it needs features and a label column")
        y = table[:, hp.label_column]
        x = np.delete(table, hp.label_column % table.shape[1], axis=1)
        n = len(table)
        n_test, n_val = round(n * hp.test_fraction), round(n * hp.val_fraction)
        if n_test == 0 and n_val == 0:
            return {"train": (x, y)}
        order = np.random.default_rng(hp.seed).permutation(n)
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        return {name: (x[idx], y[idx]) for name, idx in parts.items() if len(idx)}
