"""Every option of every config group composes, and every experiment builds its data and model."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import compose_experiment, compose_train
from deepbasics.config.paths import CONF_DIR

GROUPS = ["data", "model", "trainer", "logger", "callbacks", "paths", "hydra", "experiment", "hparams_search"]
GROUPS += ["hydra/launcher"]
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
    from deepbasics.run.build import build_datamodule, build_model, input_width

    cfg = compose_experiment(experiment, run_dir=tmp_path)
    datamodule = build_datamodule(cfg.data)
    model = build_model(cfg.model, datamodule)
    assert model.hparams.net["in_features"] == input_width(datamodule) == datamodule.splits["train"][0].shape[1]
    assert cfg.name == experiment
    assert instantiate(cfg.logger.tensorboard, save_dir=str(tmp_path)).log_dir.startswith(str(tmp_path))


@pytest.mark.parametrize("config_name", ["evaluate", "predict"])
def test_entry_point_configs_compose(config_name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=["ckpt_path=x.ckpt"])
    assert cfg.ckpt_path == "x.ckpt" and cfg.threads == 1


def test_launchers_and_searches_reach_hydra():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        parallel = compose("train", overrides=["hydra/launcher=parallel"], return_hydra_config=True)
        slurm = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        optuna = compose("train", overrides=["hparams_search=blobs_optuna"], return_hydra_config=True)
        cluster = ["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "trainer=ddp"]
        multinode = compose("train", overrides=[*cluster, "trainer.num_nodes=2"], return_hydra_config=True)
    assert parallel.hydra.launcher._target_.endswith("JoblibLauncher")
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.cpus_per_task == 1
    assert optuna.hydra.sweeper._target_.endswith("OptunaSweeper") and optuna.hydra.mode.name == "MULTIRUN"
    assert optuna.hydra.sweeper.direction == "minimize" and optuna.monitor.mode == "min"
    assert multinode.hydra.launcher.gpus_per_node == 4 and multinode.hydra.launcher.nodes == 2
    assert multinode.trainer.strategy == "ddp" and multinode.trainer.num_nodes == 2
