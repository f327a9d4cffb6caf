"""The console scripts, each handing its config (conf/<name>.yaml) to its task in ``deepbasics.run``; torch and
Lightning load only once a task needs them, so `--help` and config mistakes answer at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deepbasics.cli.app import checkpoint_app, hydra_app, in_multirun
from deepbasics.config.resolvers import config_groups
from deepbasics.config.settings import check_settings
from deepbasics.config.sweep_dir import resumed_job
from deepbasics.errors import ConfigError, Interrupted, RunFailed


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

    if in_multirun() and cfg.trainer.get("strategy") not in (None, "auto") and "SLURM_NTASKS" not in os.environ:
        return _in_own_process(cfg)  # on SLURM, this process is one of the job's ranks
    return train(cfg, overrides=overrides)


def _in_own_process(cfg: DictConfig) -> float:
    """A sweep's DDP job as a run of its own in a child process, whose ranks Lightning starts by running it again and
    ends, all, when one dies: the job fails in one line, the sweep goes on. Not under joblib, nor submitit off SLURM."""
    from deepbasics.run.finish import Run
    from deepbasics.run.training import read_json, record_status

    hydra = HydraConfig.get()
    launcher = str(hydra.launcher.get("_target_", ""))
    if "joblib" in launcher or "submitit" in launcher:
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
    child = subprocess.Popen([*program, *flags, *own, resume, *where])
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child's ranks too: they save, stop
    try:
        ended = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    run = Run.of(cfg)
    record = read_json(run.dir / "metrics.json")
    if ended == 0:
        return float(record["monitor"]["value"] if record["monitor"]["value"] is not None else "nan")
    if record.get("status") == "interrupted":  # the sweep stops there, as it does for a job in this process
        raise Interrupted(record["error"], ended, record["epochs"])
    if record.get("status") != "failed":  # killed, with no word of its own
        record["error"] = f"its processes ended with return code {ended} (Lightning ends every rank when one dies)"
        record_status(run.dir, run.identity("failed"), "failed", record["error"])
    raise RunFailed(record["error"], record.get("epochs", 0))


# `deepbasics-train experiment=<name> [key=value ...]`: train one experiment, or sweep with -m.
train = hydra_app("train", _train)
# `deepbasics-evaluate ckpt_path=<.ckpt>`: a checkpoint's metrics on its run's test (or train) split.
evaluate = checkpoint_app("evaluate", "deepbasics.run.evaluate", "evaluate")
# `deepbasics-predict ckpt_path=<.ckpt> 'inputs=[[2,2],[5,4]]'` (or inputs=<csv>): one line of JSON.
predict = checkpoint_app("predict", "deepbasics.run.predict", "predict")
