"""A numeric CSV file, such as the diabetes table."""

from __future__ import annotations

import os
import warnings

import numpy as np

from deepbasics.data.in_memory import FullBatchDataModule
from deepbasics.errors import ConfigError


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
                # utf-8-sig: a spreadsheet export may start with a byte-order mark, not part of the first number.
                table = np.loadtxt(
                    hp.path,
                    delimiter=hp.delimiter,
                    skiprows=int(hp.header),
                    dtype=np.float32,
                    ndmin=2,
                    encoding="utf-8-sig",
                )
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
