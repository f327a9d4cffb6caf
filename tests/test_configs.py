"""Every option of every config group composes, and every experiment builds its data and model."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import compose_experiment, compose_train
from deepbasics.config import CONF_DIR

GROUPS = ["data", "model", "trainer", "logger", "callbacks", "paths", "hydra", "experiment"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONF_DIR) / g).glob("*.yaml"))]
EXPERIMENTS = [name for group, name in OPTIONS if group == "experiment"]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS)
def test_option_composes(group, option):
    overrides = [f"{group}={option}"] if group != "hydra" else []
    if group == "data" and option == "csv":
        overrides.append("data.path=x.csv")
    cfg = compose_train(*overrides, run_dir=Path("/tmp/unused"))
    assert cfg.epochs > 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds_data_and_model(experiment, diabetes_csv, tmp_path):
    from deepbasics.schema import Schedule
    from deepbasics.training import build_datamodule, build_model

    cfg = compose_experiment(experiment, run_dir=tmp_path)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, Schedule.of(cfg), datamodule)
    assert model.hparams.net["in_features"] == datamodule.in_features
    assert cfg.name == experiment
    assert instantiate(cfg.logger.tensorboard, save_dir=str(tmp_path)).log_dir.startswith(str(tmp_path))
