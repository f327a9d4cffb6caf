"""Shared test helpers: composing configs the way `deepbasics-train` does, and running the real commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from deepbasics.config.paths import CONF_DIR
from deepbasics.config.resolvers import register_resolvers
from deepbasics.reports.metrics import read_json

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


def run_dirs(root: Path, experiment: str) -> list[Path]:
    return sorted((root / "outputs" / "runs" / experiment).iterdir())


def read_metrics(run_dir: Path) -> dict:
    return read_json(run_dir / "metrics.json")


@pytest.fixture
def diabetes_csv() -> Path:
    if not DIABETES.is_file():
        pytest.skip(f"{DIABETES} is not there (it lives in ../shared beside the checkout)")
    return DIABETES
