"""Shared test helpers: composing configs the way `deepbasics-train` does, and running the real commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from deepbasics.config.paths import CONF_DIR
from deepbasics.config.resolvers import register_resolvers
from deepbasics.files import read_json

REPO = Path(__file__).resolve().parents[1]
DIABETES = REPO.parent / "shared" / "data" / "diabetes.csv"
BIN = Path(sys.executable).parent

register_resolvers()


def compose_train(*overrides: str, run_dir: Path | None = None):
    """The train config as `deepbasics-train <overrides>` would see it, writing into run_dir."""
    extra = [f"paths.run_dir={run_dir}"] if run_dir is not None else []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])


def compose_experiment(experiment: str, *overrides: str, run_dir: Path | None = None):
    """compose_train for an experiment, pointing a CSV experiment at the shared diabetes table."""
    cfg = compose_train(f"experiment={experiment}", *overrides, run_dir=run_dir)
    if OmegaConf.is_missing(cfg.data, "path"):
        cfg = compose_train(f"experiment={experiment}", f"data.path={DIABETES}", *overrides, run_dir=run_dir)
    return cfg


def run_cli(command: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a console script as a user types it, in cwd (so outputs/ lands there)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(BIN / command), *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_in_this_process(command: str, args: list[str], cwd: Path, monkeypatch, capfd):
    """The console script's own entry point, called as the script calls it (sys.argv, working directory),
    in this process: the same code path as a new process, without paying for Python, torch and Lightning
    to start again for each of these cases. (Tests elsewhere start the real processes.)"""
    from deepbasics.cli import commands

    entry = getattr(commands, command.removeprefix("deepbasics-"))
    return run_main(entry, [command, *args], cwd, monkeypatch, capfd)


def run_main(main, argv: list[str], cwd: Path, monkeypatch, capfd) -> subprocess.CompletedProcess:
    """``main()`` as a process with ``argv`` in ``cwd`` would run it: its exit status and what it printed."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", argv)
    capfd.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


# The tutorials' own plain loops, the reference for the deterministic recipes.
def plain_linear(x, y, w0, b0, lr, steps):
    """The regression tutorials: W, b as leaf tensors, H(x) = xW + b, MSE, SGD."""
    W = torch.full((x.shape[1], 1), float(w0), requires_grad=True)
    b = torch.full((1,), float(b0), requires_grad=True)
    optimizer = torch.optim.SGD([W, b], lr=lr)
    for _ in range(steps):
        hypothesis = x.matmul(W) + b
        cost = torch.mean((hypothesis - y) ** 2)
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
    return W.detach(), b.detach(), (x.matmul(W) + b).detach()


def plain_logistic(x, y, lr, steps):
    """The logistic tutorials: W, b from zero, hypothesis = sigmoid(xW + b), binary cross-entropy, SGD."""
    W = torch.zeros((x.shape[1], 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([W, b], lr=lr)
    for _ in range(steps):
        hypothesis = torch.sigmoid(x.matmul(W) + b)
        cost = F.binary_cross_entropy(hypothesis, y)
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
    return W.detach(), b.detach(), torch.sigmoid(x.matmul(W) + b).detach()


def column(values):
    return torch.tensor(values, dtype=torch.float32).reshape(len(values), -1)


def diabetes():
    table = torch.tensor(np.loadtxt(DIABETES, delimiter=",", dtype=np.float32))
    return table[:, :-1], table[:, -1:]


# the default experiment cut short: 300 epochs, a point every 50, a validation and checkpoint every 100
SHORT_BLOBS = [
    "experiment=blobs_mlp",
    "epochs=300",
    "log_every=50",
    "val_every=100",
    "callbacks.model_checkpoint.every_n_epochs=100",
]

RECIPES = {
    "linear_scores": lambda: plain_linear(column([1, 2, 3, 4]), column([50, 70, 90, 85]), 0, 0, 0.01, 2000),
    "linear_study_hours": lambda: plain_linear(
        column(range(1, 10)), column([11, 22, 33, 44, 53, 66, 77, 87, 95]), 4.0, 1.0, 0.01, 301
    ),
    "logistic_pass_fail": lambda: plain_logistic(
        column([[1, 2], [2, 3], [3, 1], [4, 3], [5, 3], [6, 2]]), column([0, 0, 0, 1, 1, 1]), 0.01, 1000
    ),
    "logistic_diabetes": lambda: plain_logistic(*diabetes(), 1.0, 101),
}


def data_of(cfg):
    """A composed config's data, set up, as the run builds it (the project's in-memory modules)."""
    from deepbasics.data.in_memory import whole_splits
    from deepbasics.run.build import build_datamodule

    return whole_splits(build_datamodule(cfg.data))


def run_dirs(root: Path, experiment: str) -> list[Path]:
    return sorted((root / "outputs" / "runs" / experiment).iterdir())


def read_metrics(run_dir: Path) -> dict:
    return read_json(run_dir / "metrics.json")


@pytest.fixture
def diabetes_csv() -> Path:
    if not DIABETES.is_file():
        pytest.skip(f"{DIABETES} is not there (it lives in ../shared beside the checkout)")
    return DIABETES
