"""data.batch_size: shuffled mini-batches, an epoch a pass over the data, against a plain PyTorch loop;
validation and test in batches; bad sizes get one line."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_train, data_of, read_metrics
from deepbasics.errors import ConfigError
from deepbasics.models.nets import NeuralNet
from deepbasics.run.training import train

RECIPE = [
    "experiment=blobs_mlp",
    "data.batch_size=24",
    "epochs=30",
    "log_every=5",
    "val_every=10",
    "callbacks.model_checkpoint.every_n_epochs=10",
]


def plain_minibatch_loop(x, y, seed: int, epochs: int, batch_size: int, lr: float):
    """The loop a user would write: seeded init, each epoch a permutation drawn from (seed, epoch), SGD."""
    torch.manual_seed(seed)
    model = NeuralNet(2, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]  # 24, 24, 24, 8 rows: the last batch is short
            cost = F.binary_cross_entropy_with_logits(model(x[rows]), y[rows])
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
    return model


def test_minibatch_training_equals_the_plain_loop(tmp_path):
    cfg = compose_train(*RECIPE, run_dir=tmp_path)
    train(cfg)
    data = data_of(cfg)
    x, y = data.splits["train"]
    reference = plain_minibatch_loop(x, y, cfg.seed, 30, 24, 0.03)
    trained = torch.load(tmp_path / "model.pt")
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=1e-6)
    metrics = read_metrics(tmp_path)
    assert metrics["epochs"] == 30  # epochs count passes over the data, not batches
    (best,) = (tmp_path / "checkpoints").glob("best-epoch*.ckpt")  # Lightning's number of the pass that saved it
    assert int(best.stem.removeprefix("best-epoch")) in (9, 19, 29)
    with torch.no_grad():  # validation and test run in batches; the numbers are the whole split's
        test_x, test_y = data.splits["test"]
        loss = F.binary_cross_entropy_with_logits(reference(test_x), test_y)
    assert metrics["test"]["loss"] == pytest.approx(float(loss), rel=1e-5)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["deepbasics"]["epochs"] == 30 and last["global_step"] == 30 * -(-len(x) // 24)  # Lightning's steps


def test_the_default_is_the_tutorials_full_batch(tmp_path):
    cfg = compose_train("experiment=blobs_mlp", run_dir=tmp_path)
    assert cfg.data.batch_size is None and data_of(cfg).batch_size is None


@pytest.mark.parametrize(
    "size, message",
    [
        (0, "must be a positive integer"),
        (-3, "must be a positive integer"),
        (2.5, "must be an integer or null (BlobsDataModule's batch_size)"),
    ],
)
def test_bad_batch_sizes(tmp_path, size, message):
    with pytest.raises(ConfigError, match=f"data.batch_size={size!r} {re.escape(message)}"):
        data_of(compose_train("experiment=blobs_mlp", f"data.batch_size={size}", run_dir=tmp_path))
