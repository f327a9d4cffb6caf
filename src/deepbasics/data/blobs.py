"""sklearn make_blobs clusters, the NeuralNet tutorial's data."""

from __future__ import annotations

import numpy as np

from deepbasics.config.settings import SPLITS
from deepbasics.data.in_memory import InMemoryDataModule
from deepbasics.errors import ConfigError


class BlobsDataModule(InMemoryDataModule):
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
        batch_size: int | None = None,
    ):
        super().__init__()
        for key, rows, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0)):
            if rows < low:
                raise ConfigError(f"data.{key}={rows!r} must be {low} or more (rows)")
        if not cluster_std > 0:
            raise ConfigError(f"data.cluster_std={cluster_std!r} must be a number above 0")
        self.save_hyperparameters(logger=False)  # the loggers get the run's flat settings instead

    def make_splits(self):
        from sklearn.datasets import make_blobs

        hp = self.hparams
        labels = np.asarray(hp.labels if hp.labels is not None else range(len(hp.centers)))
        if len(labels) != len(hp.centers):
            raise ConfigError(
                f"data.labels has {len(labels)} entries for {len(hp.centers)} centers; give one label per centre"
            )
        seeds = np.random.SeedSequence(hp.seed).spawn(len(SPLITS))
        splits = {}
        for name, seed in zip(SPLITS, seeds, strict=True):
            if rows := hp[f"n_{name}"]:
                rng = np.random.RandomState(np.random.MT19937(seed))
                x, centre = make_blobs(rows, centers=hp.centers, cluster_std=hp.cluster_std, random_state=rng)
                splits[name] = (x, labels[centre])
        return splits
