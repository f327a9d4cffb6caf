from pathlib import Path

import numpy as np
import pytest
import torch

from deepbasics.data import BlobsDataModule, CSVDataModule, ToyDataModule
from deepbasics.errors import ConfigError

CENTERS = [[1, 1], [-1, -1], [1, -1], [-1, 1]]


def blobs(**kwargs):
    dm = BlobsDataModule(
        centers=CENTERS, cluster_std=0.3, n_train=80, n_val=20, n_test=20, labels=[0, 0, 1, 1], **kwargs
    )
    dm.setup()
    return dm


def test_blobs_shapes_dtypes_and_label_mapping():
    dm = blobs(seed=3)
    for split, n in {"train": 80, "val": 20, "test": 20}.items():
        x, y = dm.splits[split]
        assert x.shape == (n, 2) and y.shape == (n, 1)
        assert x.dtype == y.dtype == torch.float32
        # make_blobs spreads points evenly over the centres; {0,1} -> 0 and {2,3} -> 1 gives half ones
        assert y.sum().item() == n / 2
        # at std 0.3 every point is closest to its own centre: its label is that centre's label
        nearest = torch.cdist(x, torch.tensor(CENTERS, dtype=torch.float32)).argmin(1)
        assert torch.equal(y.squeeze(1), torch.tensor([0.0, 0, 1, 1])[nearest])
    assert dm.splits["train"][0].shape[1] == 2


def test_blobs_seeds_reproduce_and_differ():
    a, b, c = blobs(seed=3), blobs(seed=3), blobs(seed=4)
    assert all(torch.equal(a.splits[s][0], b.splits[s][0]) for s in ("train", "val", "test"))
    assert not torch.equal(a.splits["train"][0], c.splits["train"][0])
    assert not torch.equal(a.splits["train"][0][:20], a.splits["test"][0])  # separate draws per split


def test_an_epoch_of_full_batches_is_the_whole_training_split_once():
    dm = ToyDataModule(train={"x": [1, 2, 3], "y": [2, 4, 6]})
    dm.setup()
    epochs = [list(dm.train_dataloader()) for _ in range(3)]
    assert [len(batches) for batches in epochs] == [1, 1, 1] and len(dm.train_dataloader()) == 1
    x, y = epochs[0][0]
    assert x.tolist() == [[1.0], [2.0], [3.0]] and y.tolist() == [[2.0], [4.0], [6.0]]
    assert all(batches[0][0] is x for batches in epochs), "placed once, the same tensor at every epoch"
    assert dm.val_dataloader() == [] and "test" not in dm.splits


def test_toy_rejects_mismatched_lengths():
    dm = ToyDataModule(train={"x": [1, 2, 3], "y": [2, 4]})
    with pytest.raises(ConfigError, match="x has 3 rows but y has 2"):
        dm.setup()


def test_csv_reads_the_diabetes_table_in_file_order(diabetes_csv):
    dm = CSVDataModule(path=str(diabetes_csv))
    dm.setup()
    x, y = dm.splits["train"]
    table = np.loadtxt(diabetes_csv, delimiter=",", dtype=np.float32)
    assert x.shape == (759, 8) and y.shape == (759, 1) and list(dm.splits) == ["train"]
    assert np.array_equal(x.numpy(), table[:, :-1]) and np.array_equal(y.numpy()[:, 0], table[:, -1])
    assert set(y.unique().tolist()) == {0.0, 1.0}


def test_csv_exported_by_a_spreadsheet_with_a_byte_order_mark(diabetes_csv, tmp_path):
    """Spreadsheets save "CSV UTF-8" with a BOM before the first number; the table reads the same."""
    exported = tmp_path / "exported.csv"
    exported.write_bytes(b"\xef\xbb\xbf" + diabetes_csv.read_bytes().replace(b"\n", b"\r\n"))
    plain, bom = CSVDataModule(path=str(diabetes_csv)), CSVDataModule(path=str(exported))
    plain.setup()
    bom.setup()
    for a, b in zip(plain.splits["train"], bom.splits["train"], strict=True):
        assert torch.equal(a, b)


def test_csv_splits_are_seeded_and_disjoint(diabetes_csv):
    def rows(seed):
        dm = CSVDataModule(path=str(diabetes_csv), val_fraction=0.1, test_fraction=0.2, seed=seed)
        dm.setup()
        return {s: {tuple(r) for r in dm.splits[s][0].tolist()} for s in ("train", "val", "test")}, dm

    first, dm = rows(0)
    again, _ = rows(0)
    other, _ = rows(1)
    assert {s: len(dm.splits[s][0]) for s in dm.splits} == {"test": 152, "val": 76, "train": 531}
    assert first == again and first != other
    assert not (first["train"] & first["test"]) and not (first["val"] & first["test"])


def test_csv_path_is_stored_absolute(diabetes_csv, monkeypatch):
    monkeypatch.chdir(diabetes_csv.parent)
    stored = Path(CSVDataModule(path=diabetes_csv.name).hparams.path)
    # the same file from anywhere; compared as files, since ../shared may be reached through a symlink
    assert stored.is_absolute() and stored.samefile(diabetes_csv)
    monkeypatch.chdir("/")
    assert stored.is_file()
