"""The console scripts, each handing its config (conf/<name>.yaml) to its task in ``deepbasics.run``; torch and
Lightning load only once a task needs them, so `--help` and config mistakes answer at once."""

from __future__ import annotations

import os
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, read_write

from deepbasics.cli.app import checkpoint_app, hydra_app, in_multirun
from deepbasics.config.resolvers import config_groups
from deepbasics.config.settings import check_settings
from deepbasics.config.sweep_dir import resumed_job
from deepbasics.errors import ConfigError


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

    env = dict(os.environ)
    try:
        if in_multirun():
            _as_one_run(cfg)
        return train(cfg, overrides=overrides)
    finally:  # a sweep's next job starts its own ranks: Lightning reads them from the environment and keeps
        os.environ.clear()  # the last job's process group (whose other ranks have exited) unless it is destroyed
        os.environ.update(env)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _as_one_run(cfg: DictConfig) -> None:
    """Lightning starts a DDP job's other ranks by running this command again (sys.argv, in ``hydra.run.dir``):
    for a sweep's job, the job alone. Not so a parallel worker, nor submitit's outside SLURM (whose tasks are ranks)."""
    hydra = HydraConfig.get()
    launcher = str(hydra.launcher.get("_target_", ""))
    if cfg.trainer.get("strategy") not in (None, "auto") and (
        "joblib" in launcher or "submitit" in launcher and "SLURM_NTASKS" not in os.environ
    ):
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy}: a sweep's DDP jobs train under the basic or vectorized"
            " launcher (one job at a time, all its ranks) or on SLURM; drop hydra/launcher= or use trainer=cpu"
        )
    # the command's own flags (--config-dir conf), not -m nor the sweep's overrides; then this job's overrides
    flags = [
        a for a in sys.argv[1:] if a not in ("-m", "--multirun") and (a[:1] == "-" or "=" not in a and a[:1] != "~")
    ]
    own = [o for o in hydra.overrides.task if o.split("=")[0] != "resume"]
    sys.argv = [sys.argv[0], *flags, *own, f'resume="{cfg.resume}"' if cfg.get("resume") else "resume=null"]
    with read_write(hydra.run):
        hydra.run.dir = hydra.runtime.output_dir


# `deepbasics-train experiment=<name> [key=value ...]`: train one experiment, or sweep with -m.
train = hydra_app("train", _train)
# `deepbasics-evaluate ckpt_path=<.ckpt>`: a checkpoint's metrics on its run's test (or train) split.
evaluate = checkpoint_app("evaluate", "deepbasics.run.evaluate", "evaluate")
# `deepbasics-predict ckpt_path=<.ckpt> 'inputs=[[2,2],[5,4]]'` (or inputs=<csv>): one line of JSON.
predict = checkpoint_app("predict", "deepbasics.run.predict", "predict")
