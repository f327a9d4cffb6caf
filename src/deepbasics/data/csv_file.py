"""A numeric CSV file, such as the diabetes table."""

from __future__ import annotations

import os
import warnings

import numpy as np

from deepbasics.data.in_memory import FullBatchDataModule
from deepbasics.errors import ConfigError


class CSVDataModule(FullBatchDataModule):
    """A numeric CSV (no quoting). ``target`` is the target column and ``features`` the input columns, by
    name (with ``header``: the first row names the columns) or by position; by default the target is
    ``label_column`` (the last) and the features are all the others. Without split fractions every row
    trains, in file order, as in the tutorial; with them a seeded shuffle carves out val and test.
    ``standardize`` scales each feature by the training split's mean and std (the base class does it)."""

    def __init__(
        self,
        path: str,
        label_column: int = -1,
        delimiter: str = ",",
        header: bool = False,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
        target: str | int | None = None,
        features: list | None = None,
        standardize: bool = False,
        batch_size: int | None = None,
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
            if not hp.header and " at row 0," in reason:  # words in the first row: most likely column names
                reason += "; if the first row names the columns, pass data.header=true"
            raise ConfigError(
                f"data.path {hp.path}: {reason}; every cell must be a number, every row as wide"
            ) from None
        if table.size == 0:
            raise ConfigError(f"data.path {hp.path} has no rows; give a CSV with data (header={hp.header})")
        if table.shape[1] < 2:
            raise ConfigError(f"data.path {hp.path} has one column; it needs features and a label column")
        self._width = table.shape[1]
        names = self._column_names(table.shape[1])
        target = self._column(hp.label_column if hp.target is None else hp.target, names, "data.target")
        if hp.features is None:
            features = [i for i in range(table.shape[1]) if i != target]
        else:
            features = [self._column(f, names, "data.features") for f in hp.features]
            if target in features or len(set(features)) != len(features) or not features:
                raise ConfigError(f"data.features={list(hp.features)}: name each input column once, and not the target")
        y, x = table[:, target], table[:, features]
        n = len(table)
        n_test, n_val = round(n * hp.test_fraction), round(n * hp.val_fraction)
        if n_test == 0 and n_val == 0:
            return {"train": (x, y)}
        order = np.random.default_rng(hp.seed).permutation(n)
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        return {name: (x[idx], y[idx]) for name, idx in parts.items() if len(idx)}

    def _column_names(self, width: int) -> list[str] | None:
        """The header's column names (None without a header)."""
        if not self.hparams.header:
            return None
        with open(self.hparams.path, encoding="utf-8-sig") as f:
            names = [name.strip().strip('"') for name in f.readline().rstrip("\r\n").split(self.hparams.delimiter)]
        return names if len(names) == width else None

    def _column(self, key, names: list[str] | None, what: str) -> int:
        """A column's position from its name (needs the header) or its index (negative counts from the end)."""
        width = len(names) if names else None
        if isinstance(key, str) and not key.lstrip("-").isdigit():
            if names is None:
                raise ConfigError(
                    f"{what}={key!r} is a name: pass data.header=true when the first row names the columns"
                )
            if key not in names:
                raise ConfigError(
                    f"{what}={key!r} is not a column of {self.hparams.path}; its columns are: {', '.join(names)}"
                )
            return names.index(key)
        index = int(key)
        columns = width or self._width
        if not -columns <= index < columns:
            raise ConfigError(f"{what}={index} is not a column: the file has {columns} (0 to {columns - 1})")
        return index % columns
