"""``hydra/launcher=vectorized``: the jobs of a multirun batch (a grid, or an Optuna sweeper's n_jobs
trials) that can share a stacked model train as one (``deepbasics.run.group``); the others run one by one
as the basic launcher runs them. Every job gets what a basic-launcher job gets: its directory with
``.hydra/``, its log file, Hydra's job callbacks and its JobReturn with the monitored value."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    env_override,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.deepbasics_grid.configs import SweepConfigs

log = logging.getLogger(__name__)

# Keys a group's jobs may differ in (the rest of the config must be equal): the seed, where each job writes,
# how it logs, its data (stacked too; shapes are checked once built), and its optimizer's values.
PER_JOB = ("seed", "paths", "logger", "data", "progress")


def group_key(cfg: DictConfig) -> tuple[str | None, str]:
    """(why this job cannot be stacked, "") or (None, the key its group shares: the config but for what may
    differ between the jobs of a group)."""
    from hydra.utils import get_class

    from deepbasics.data.in_memory import offers_whole_splits
    from deepbasics.models.stacked import optimizer_kind, unstackable_optimizer

    if cfg.get("resume"):
        return "it resumes a run", ""
    if OmegaConf.select(cfg, "hydra.job.chdir"):
        return "hydra.job.chdir is set (stacked jobs share one working directory)", ""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if model.get("scheduler"):
        return "model.scheduler is set (the stacked step has no learning-rate schedulers)", ""
    if not offers_whole_splits(get_class(cfg.data._target_)):
        return "its data are served through DataLoaders (stacked jobs hold their data in memory)", ""
    if OmegaConf.select(cfg, "data.batch_size"):
        return "data.batch_size is set (stacked jobs train on full batches)", ""
    if cfg.get("figure_every"):
        return "figure_every is set (stacked jobs draw their figures at the end)", ""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer.get("devices", 1) not in (1, [0], "1") or trainer.get("num_nodes", 1) != 1 or trainer.get("strategy"):
        return "it trains on several devices", ""
    if trainer.get("profiler") or trainer.get("detect_anomaly"):
        return "it profiles or detects anomalies (debug=profiler|anomaly)", ""
    others = sorted(set(cfg.get("callbacks") or {}) - {"model_checkpoint"})
    if others:
        return f"callbacks.{others[0]} is not run for stacked jobs", ""
    reason = unstackable_optimizer(model["optimizer"])
    if reason:
        return reason, ""
    keys = [key for key in cfg if key not in (*PER_JOB, "hydra")]
    shared = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=False)
    shared["model"] = {k: v for k, v in model.items() if k not in ("optimizer", "init")}
    shared["optimizer"] = optimizer_kind(model["optimizer"])
    shared["trainer"] = trainer
    env = OmegaConf.select(cfg, "hydra.job.env_set")
    shared["env_set"] = OmegaConf.to_container(env) if OmegaConf.is_config(env) else {}
    return None, json.dumps(shared, sort_keys=True, default=str)


def resumed_key(sweep_config: DictConfig) -> tuple[str | None, str]:
    """``group_key`` for a job of a sweep being finished (``resume=auto``): a finished job runs on its own
    (it only says so); the others group with the jobs whose checkpoints are at the same step, and with jobs
    that start, by the step they start at."""
    import torch

    from deepbasics.config.sweep_dir import job_state, resumed_job

    job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    if job_state(job_dir)[0] == "finished":
        return "it has finished", ""
    resumed = resumed_job(str(job_dir))
    step = torch.load(Path(resumed) / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] if resumed else 0
    fresh = sweep_config.copy()
    with open_dict(fresh):
        fresh.resume = None
    reason, key = group_key(fresh)
    return reason, f"{key} from step {step}" if reason is None else key


class VectorizedLauncher(Launcher):
    takes_checked_configs = True  # the grid sweeper hands over the configs it composed (checked_configs)

    def __init__(self, group_size: int | None = None) -> None:
        super().__init__()
        self.group_size = group_size
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.checked_configs: dict[tuple[str, ...], DictConfig] = {}  # filled by the grid sweeper per batch

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, stacked where they share a model shape and schedule")
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        configs, groups, solo = self.plan(job_overrides, initial_job_idx)
        returns: dict[int, JobReturn] = {}
        # the groups first: a group refused (too large for its GPU) stops the launch before the jobs that run alone
        for chunk in groups:
            returns.update(self._train_stacked(chunk, [configs[i - initial_job_idx] for i in chunk]))
        for idx in sorted(solo):
            log.info(f"#{idx} runs on its own: {solo[idx]}")
            returns[idx] = self._run(configs[idx - initial_job_idx], self.task_function, self.hydra_context)
        return [returns[idx] for idx in range(initial_job_idx, initial_job_idx + len(job_overrides))]

    def plan(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> tuple[list[DictConfig], list[list[int]], dict[int, str]]:
        """Each job's config, the groups that train stacked (at most group_size jobs each) and the jobs that
        run on their own, with why."""
        configs, groups, solo = [], {}, {}
        loader = SweepConfigs(self.hydra_context.config_loader, self.config, self.checked_configs)
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            sweep_config = loader.load(list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
            reason, key = self._key(sweep_config)
            if reason:
                solo[idx] = reason
            else:
                groups.setdefault(key, []).append(idx)
        for members in [m for m in groups.values() if len(m) == 1]:
            solo[members[0]] = "no other job of this batch shares its model shape, optimizer kind and schedule"
        chunks = []
        for members in [m for m in groups.values() if len(m) > 1]:
            size = self.group_size or len(members)
            chunks += [members[start : start + size] for start in range(0, len(members), size)]
        return configs, chunks, solo

    def _key(self, sweep_config: DictConfig) -> tuple[str | None, str]:
        try:
            if sweep_config.get("resume") == "auto":  # a job of a sweep being finished: by the state it is in
                return resumed_key(sweep_config)
            return group_key(sweep_config)
        except Exception as err:  # the job itself will report it when it runs
            return f"its config does not resolve ({type(err).__name__}: {str(err).splitlines()[0]})", ""

    def _run(self, sweep_config: DictConfig, task: TaskFunction, context: HydraContext) -> JobReturn:
        ret = run_job(
            hydra_context=context,
            task_function=task,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _train_stacked(self, indices: list[int], sweep_configs: list[DictConfig]) -> dict[int, JobReturn]:
        from deepbasics.cli.app import guarded
        from deepbasics.run.group import train_group

        began, timings, writes = time.perf_counter(), {}, []
        previous = HydraConfig.instance().cfg
        started = [self._start(c, writes) for c in sweep_configs]
        HydraConfig.instance().cfg = previous  # as run_job leaves it
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        written = _write_while_training(writes)
        prepared = [ret for ret, _ in started]
        outcomes: list[Any] = [cfg for _, cfg in started]  # the resolved config, or why it does not resolve
        for cfg in outcomes:
            if isinstance(cfg, DictConfig) and cfg.get("resume") == "auto":  # its own last.ckpt, or a start
                from deepbasics.config.sweep_dir import resumed_job

                cfg.resume = resumed_job(cfg.paths.run_dir)
        ready = [k for k, cfg in enumerate(outcomes) if isinstance(cfg, DictConfig)]
        log.info(f"training {_jobs(len(ready))} stacked: {_numbers([indices[k] for k in ready])}")
        chatter = logging.getLogger("lightning.pytorch")  # accelerator notes and tips: not once per group
        level = chatter.level
        chatter.setLevel(logging.WARNING)
        try:  # the jobs' hydra.job.env_set (one for the group: it is part of the group's key)
            with env_override(sweep_configs[ready[0]].hydra.job.env_set if ready else {}):
                trained = train_group([outcomes[k] for k in ready], [str(indices[k]) for k in ready], timings)
        except BaseException:
            written()
            raise
        finally:
            chatter.setLevel(level)
        for k, outcome in zip(ready, trained, strict=True):
            outcomes[k] = outcome
        written()
        returns = {}
        for idx, sweep_config, ret, outcome in zip(indices, sweep_configs, prepared, outcomes, strict=True):
            returns[idx] = self._end(sweep_config, ret, outcome, guarded)
        spent, fit = time.perf_counter() - began, timings.get("fit", 0.0)
        log.info(
            f"{_jobs(len(indices))} stacked in {spent:.1f} s: fit {fit:.1f} s,"
            f" {1000 * (spent - fit) / len(indices):.0f} ms a job outside the fit"
        )
        return returns

    def _start(self, config: DictConfig, writes: list) -> tuple[JobReturn, DictConfig | Exception]:
        """What Hydra's run_job does before it calls the task (the job's directory, its log file,
        on_job_start; its .hydra/ files go to ``writes``), without run_job's two copies of the whole config
        (half its cost for these small jobs); and the job's config, resolved as its task would see it."""
        output_dir = os.path.abspath(os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(config)
        hydra_cfg = HydraConfig.instance().cfg  # set_config made it: a copy of the hydra node alone
        task_cfg = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        ret = JobReturn(overrides=overrides, cfg=task_cfg, hydra_cfg=hydra_cfg, working_dir=os.getcwd())
        ret.task_name = JobRuntime.instance().get("name")
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if hydra_cfg.hydra.output_subdir is not None:
            files = Path(output_dir) / str(hydra_cfg.hydra.output_subdir)
            writes += [(task_cfg, "config.yaml", files), (hydra_cfg, "hydra.yaml", files)]
            writes.append((config.hydra.overrides.task, "overrides.yaml", files))
        configure_log(hydra_cfg.hydra.job_logging, hydra_cfg.hydra.verbose)
        with env_override(hydra_cfg.hydra.job.env_set):
            self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
        try:
            return ret, OmegaConf.create(OmegaConf.to_container(task_cfg, resolve=True))
        except Exception as err:  # the job fails alone, through the error policy
            return ret, err

    def _end(self, sweep_config: DictConfig, ret: JobReturn, outcome: Any, guarded) -> JobReturn:
        """The job's JobReturn as run_job would give it for a task with this outcome, and on_job_end."""
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(sweep_config)
        try:
            try:
                ret.return_value = guarded(lambda cfg: _outcome(outcome), ret.cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as err:  # what the error policy lets through (an unexpected error)
                ret.return_value = err
                ret.status = JobStatus.FAILED
            self.hydra_context.callbacks.on_job_end(config=sweep_config, job_return=ret)
        finally:
            HydraConfig.instance().cfg = previous
        return ret


def _save_config(cfg, filename: str, output_dir: Path) -> None:
    """A job's .hydra/ file, as Hydra's run_job writes it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / filename)


def _write_while_training(writes: list) -> Callable[[], None]:
    """Each job's .hydra/ files, as run_job writes them, written by a forked child while this process
    trains the group on one core (their YAML costs more than a stacked job's share of the fit); the call
    returned waits for the child and logs an error if it failed. Written here when fork is missing, or for
    a few jobs."""
    if not hasattr(os, "fork") or len(writes) < 24:
        for args in writes:
            _save_config(*args)
        return lambda: None
    child = os.fork()
    if child == 0:  # the child writes and leaves at once: no atexit handlers, no flush of inherited buffers
        code = 0
        try:
            for args in writes:
                _save_config(*args)
        except BaseException as err:
            print(f"error: writing a job's .hydra files: {err}", file=sys.stderr, flush=True)
            code = 1
        os._exit(code)

    def wait() -> None:
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:  # the jobs trained all the same: say so, do not fail them
            log.error(f"some jobs' .hydra/ files were not written (the writer exited {status}); see above")

    return wait


def _numbers(indices: list[int]) -> str:
    """Job numbers with runs of consecutive ones as ranges: #0-#99, #101, #103-#104."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"#{a}" if a == b else f"#{a}-#{b}" for a, b in runs)


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _outcome(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
