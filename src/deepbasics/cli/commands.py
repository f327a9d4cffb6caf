"""The console scripts, each handing its config (conf/<name>.yaml) to its task in ``deepbasics.run``; torch and
Lightning load only once a task needs them, so `--help` and config mistakes answer at once."""

from __future__ import annotations

import os
import subprocess
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deepbasics.cli.app import checkpoint_app, hydra_app, in_multirun
from deepbasics.config.resolvers import config_groups
from deepbasics.config.settings import check_settings
from deepbasics.config.sweep_dir import resumed_job
from deepbasics.errors import ConfigError, RunFailed


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

    if in_multirun() and cfg.trainer.get("strategy") not in (None, "auto"):
        return _in_own_process(cfg)
    return train(cfg, overrides=overrides)


def _in_own_process(cfg: DictConfig) -> float:
    """A sweep's DDP job as a run of its own in a child process (its overrides, its directory), whose other ranks
    Lightning starts by running that command again and ends, all of them, when one dies: the job then fails with
    one line and the sweep goes on. Not under a parallel worker, nor submitit's outside SLURM (tasks are ranks)."""
    from deepbasics.run.finish import Run
    from deepbasics.run.training import read_json, record_status

    hydra = HydraConfig.get()
    launcher = str(hydra.launcher.get("_target_", ""))
    if "joblib" in launcher or "submitit" in launcher and "SLURM_NTASKS" not in os.environ:
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy}: a sweep's DDP jobs train under the basic or vectorized"
            " launcher (one job at a time, all its ranks) or on SLURM; drop hydra/launcher= or use trainer=cpu"
        )
    # the command's own flags (--config-dir conf), not -m nor the sweep's overrides; then this job's overrides
    flags = [
        a for a in sys.argv[1:] if a not in ("-m", "--multirun") and (a[:1] == "-" or "=" not in a and a[:1] != "~")
    ]
    own = [o for o in hydra.overrides.task if o.split("=")[0] != "resume"]
    resume = f'resume="{cfg.resume}"' if cfg.get("resume") else "resume=null"
    where = [f'hydra.run.dir="{hydra.runtime.output_dir}"', "hydra.output_subdir=null"]  # the sweep wrote .hydra/
    main = sys.modules["__main__"].__spec__  # as Lightning runs a command again
    program = [sys.executable, "-m", main.name] if main else [sys.executable, sys.argv[0]]
    ended = subprocess.run([*program, *flags, *own, resume, *where]).returncode
    run = Run.of(cfg)
    record = read_json(run.dir / "metrics.json")
    if ended == 0:
        return float(record["monitor"]["value"])
    if record.get("status") not in ("failed", "interrupted"):  # killed, with no word of its own
        record["error"] = f"its processes ended with return code {ended} (Lightning ends every rank when one dies)"
        record_status(run.dir, run.identity("failed"), "failed", record["error"])
    raise RunFailed(record["error"], record.get("epochs", 0))


# `deepbasics-train experiment=<name> [key=value ...]`: train one experiment, or sweep with -m.
train = hydra_app("train", _train)
# `deepbasics-evaluate ckpt_path=<.ckpt>`: a checkpoint's metrics on its run's test (or train) split.
evaluate = checkpoint_app("evaluate", "deepbasics.run.evaluate", "evaluate")
# `deepbasics-predict ckpt_path=<.ckpt> 'inputs=[[2,2],[5,4]]'` (or inputs=<csv>): one line of JSON.
predict = checkpoint_app("predict", "deepbasics.run.predict", "predict")
