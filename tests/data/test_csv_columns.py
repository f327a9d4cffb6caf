"""CSV columns by name (data.header, data.target, data.features) and data.standardize, from the training
split only, kept in the checkpoint and applied by evaluate and predict."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train, read_metrics, run_cli, run_in_this_process
from deepbasics.data import CSVDataModule
from deepbasics.errors import ConfigError

NAMES = ["pregnant", "glucose", "pressure", "skin", "insulin", "bmi", "pedigree", "age", "outcome"]


@pytest.fixture
def named_csv(diabetes_csv, tmp_path):
    """The diabetes table with a header row, the outcome moved to the middle."""
    table = np.loadtxt(diabetes_csv, delimiter=",")
    order = [0, 1, 8, 2, 3, 4, 5, 6, 7]
    path = tmp_path / "named.csv"
    np.savetxt(path, table[:, order], delimiter=",", fmt="%g", header=",".join(NAMES[i] for i in order), comments="")
    return path, table


def test_columns_by_name(named_csv):
    path, table = named_csv
    dm = CSVDataModule(path=str(path), header=True, target="outcome", features=["glucose", "bmi"])
    dm.setup()
    x, y = dm.splits["train"]
    assert np.array_equal(x.numpy(), table[:, [1, 5]].astype(np.float32))
    assert np.array_equal(y[:, 0].numpy(), table[:, 8].astype(np.float32))
    every = CSVDataModule(path=str(path), header=True, target="outcome")  # features: all but the target
    every.setup()
    assert every.splits["train"][0].shape[1] == 8
    assert np.array_equal(every.splits["train"][0][:, 1].numpy(), table[:, 1].astype(np.float32))
    by_index = CSVDataModule(path=str(path), header=True, target=2, features=[1, 6])
    by_index.setup()
    assert torch.equal(by_index.splits["train"][0], x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": "outcom"}, "data.target='outcom' is not a column of "),
        ({"target": "outcome", "features": ["glucose", "outcome"]}, "name each input column once, and not the target"),
        ({"target": 12}, re.escape("data.target=12 is not a column: the file has 9 (0 to 8)")),
    ],
)
def test_unknown_columns_get_one_line_listing_the_columns(named_csv, kwargs, message):
    path, _ = named_csv
    with pytest.raises(ConfigError, match=message) as raised:
        CSVDataModule(path=str(path), header=True, **kwargs).setup()
    if "outcom'" in message:
        assert str(raised.value).endswith(
            "its columns are: " + ", ".join(NAMES[i] for i in [0, 1, 8, 2, 3, 4, 5, 6, 7])
        )
    with pytest.raises(ConfigError, match="pass data.header=true"):
        CSVDataModule(path=str(path), target="outcome").setup()


def test_standardize_uses_the_training_split_only(named_csv):
    path, _ = named_csv
    dm = CSVDataModule(path=str(path), header=True, target="outcome", standardize=True, test_fraction=0.2, seed=1)
    dm.setup()
    raw = CSVDataModule(path=str(path), header=True, target="outcome", test_fraction=0.2, seed=1)
    raw.setup()
    x, test_x = dm.splits["train"][0], dm.splits["test"][0]
    torch.testing.assert_close(x.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(8), atol=1e-4, rtol=0)
    mean, std = torch.tensor(dm.standardization["mean"]), torch.tensor(dm.standardization["std"])
    torch.testing.assert_close(mean.float(), raw.splits["train"][0].mean(0), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(test_x, ((raw.splits["test"][0] - mean) / std).float())  # the train scale


def test_standardized_runs_keep_their_scale_for_evaluate_and_predict(named_csv, tmp_path, monkeypatch, capfd):
    import json

    from deepbasics.run.training import train

    path, table = named_csv
    args = [
        "experiment=logistic_diabetes", f"data.path={path}", "data.header=true", "data.target=outcome",
        "data.standardize=true", "data.test_fraction=0.2", "epochs=50", "model.optimizer.lr=0.1",
        f"question={table[:3, :8].tolist()}",  # raw rows, answered at the run's end as predict answers them
    ]  # fmt: skip
    run = tmp_path / "run"
    train(compose_train(*args, run_dir=run))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    stats = checkpoint["deepbasics"]["standardization"]
    assert len(stats["mean"]) == len(stats["std"]) == 8

    # the CSV moved: evaluate says so, and data.path points it at the file's new place
    moved = path.rename(path.with_name("moved.csv"))
    lost = run_in_this_process("deepbasics-evaluate", [f"ckpt_path={run}"], tmp_path, monkeypatch, capfd)
    assert lost.returncode == 2
    assert lost.stderr == f"error: data.path: no file at {path}; pass data.path=<csv file>\n"
    assert not (tmp_path / "outputs" / "evaluations").exists(), "a refused evaluation leaves no directory"
    run_cli("deepbasics-evaluate", f"ckpt_path={run}", f"data.path={moved}", cwd=tmp_path)  # the run directory
    (evaluation,) = (tmp_path / "outputs" / "evaluations").iterdir()
    assert read_metrics(evaluation)["test"] == read_metrics(run)["test"]
    assert read_metrics(evaluation)["checkpoint"] == str(run / "checkpoints" / "last.ckpt")

    from deepbasics.run.predict import predict

    rows = table[:3, :8].tolist()
    answer = predict(
        OmegaConf.create({"ckpt_path": str(run / "checkpoints" / "last.ckpt"), "inputs": rows, "threads": 1})
    )
    weight, bias = checkpoint["state_dict"]["net.linear.weight"], checkpoint["state_dict"]["net.linear.bias"]
    scaled = (torch.tensor(rows, dtype=torch.float64) - torch.tensor(stats["mean"])) / torch.tensor(stats["std"])
    expected = torch.sigmoid(scaled.float() @ weight.T + bias)[:, 0].tolist()
    assert answer == pytest.approx(expected, rel=1e-5)
    assert read_metrics(run)["question"]["predictions"] == answer
    json.dumps(answer)


def test_columns_on_far_apart_scales_name_data_standardize(tmp_path, monkeypatch, capfd):
    """A table whose columns' spreads lie orders of magnitude apart says once how to scale them; scaled, it does
    not, nor does the tutorial's diabetes table (its columns scaled already)."""
    from conftest import DIABETES

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.random(60), 5000 * rng.random(60)])
    np.savetxt(tmp_path / "unscaled.csv", np.column_stack([x, (x[:, 0] > 0.5).astype(float)]), delimiter=",")
    hint = "data: the input columns' spreads run from 0.2"
    for path, scaled, said in ((tmp_path / "unscaled.csv", "false", 1), (tmp_path / "unscaled.csv", "true", 0),
                               (DIABETES, "false", 0)):  # fmt: skip
        args = ["experiment=logistic_diabetes", f"data.path={path}", "epochs=5", "val_every=5", "log_every=5",
                f"data.standardize={scaled}"]  # fmt: skip
        proc = run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout + proc.stderr
        assert out.count(hint) == said and ("pass data.standardize=true to scale them" in out) == bool(said), out
    # a stacked group of three jobs on another such table: the line once, not once a job; no event reader's notes
    np.savetxt(tmp_path / "wider.csv", np.column_stack([x * [1, 3], (x[:, 0] > 0.5).astype(float)]), delimiter=",")
    args = ["-m", "experiment=logistic_diabetes", f"data.path={tmp_path / 'wider.csv'}", "epochs=5", "val_every=5",
            "log_every=5", "seed=1,2,3", "hydra/launcher=vectorized"]  # fmt: skip
    proc = run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "training 3 jobs stacked" in out, out
    assert out.count("pass data.standardize=true to scale them") == 1 and "Directory watcher" not in out, out
