"""The console scripts, each handing its config (conf/<name>.yaml) to its task in ``deepbasics.run``; torch and
Lightning load only once a task needs them, so `--help` and config mistakes answer at once."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deepbasics.cli.app import checkpoint_app, hydra_app, in_multirun
from deepbasics.config.resolvers import config_groups
from deepbasics.config.settings import check_settings
from deepbasics.config.sweep_dir import resumed_job


def _train(cfg: DictConfig):
    # This command line's overrides: a resume applies its plain values (epochs=...) to the stored config.
    overrides = list(HydraConfig.get().overrides.task)
    if cfg.get("resume") == "auto" and in_multirun():  # a job of a sweep being finished: its own state
        cfg.resume = resumed_job(cfg.paths.run_dir)
        # the sweep's definition was checked as a whole: its config groups are the job's own, not changes
        overrides = [o for o in overrides if o.split("=")[0].lstrip("+~").split("/")[0] not in config_groups()]
    # A mistake answers before torch loads (train checks a resumed run's stored config itself).
    if not cfg.get("resume"):
        check_settings(cfg)
    from deepbasics.run.training import train

    return train(cfg, overrides=overrides)


# `deepbasics-train experiment=<name> [key=value ...]`: train one experiment, or sweep with -m.
train = hydra_app("train", _train)
# `deepbasics-evaluate ckpt_path=<.ckpt>`: a checkpoint's metrics on its run's test (or train) split.
evaluate = checkpoint_app("evaluate", "deepbasics.run.evaluate", "evaluate")
# `deepbasics-predict ckpt_path=<.ckpt> 'inputs=[[2,2],[5,4]]'` (or inputs=<csv>): one line of JSON.
predict = checkpoint_app("predict", "deepbasics.run.predict", "predict")
