"""``hydra/launcher=vectorized``: a batch's jobs that can share a stacked model train as one, the others one by
one; each job gets what a basic-launcher job gets (its directory, .hydra/, log, callbacks, JobReturn)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
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
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from deepbasics.cli.app import AGAIN, guarded
from deepbasics.config.sweep_dir import LAST, consecutive, job_state, resumed_job
from deepbasics.errors import Interrupted, RunFailed
from hydra_plugins.deepbasics_grid.configs import SweepConfigs

log = logging.getLogger(__name__)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the C one where PyYAML was built with libyaml

# What a group's jobs may differ in, besides their optimizer's values (data are stacked too, shapes checked once built)
PER_JOB = ("seed", "paths", "logger", "data", "progress", "hydra")


def group_key(cfg: DictConfig, finishing: bool = False) -> tuple[str | None, str]:
    """(why this job cannot be stacked, "") or (None, what its group shares: the config but ``PER_JOB``);
    ``finishing``: a job of a sweep being finished, whose resume=auto only continues its own run."""
    from deepbasics.models.stacked import optimizer_kind, unstackable_optimizer

    model, trainer = (OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "trainer"))
    others = sorted(set(cfg.get("callbacks") or {}) - {"model_checkpoint", "early_stopping"})
    in_memory = callable(getattr(get_class(cfg.data._target_), "batches", None))  # offers in_memory.WholeSplits
    many_devices = trainer.get("devices", 1) not in (1, [0], "1") or trainer.get("num_nodes", 1) != 1
    schedule = model.get("scheduler") or {}  # OneCycleLR and CyclicLR cycle momentum too, by default
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    reasons = {
        "it resumes a run": cfg.get("resume") and not finishing,
        "hydra.job.chdir is set (stacked jobs share one working directory)": OmegaConf.select(cfg, "hydra.job.chdir"),
        "its data are served through DataLoaders (stacked jobs hold their data in memory)": not in_memory,
        "it trains on several devices": many_devices or trainer.get("strategy"),
        "trainer.min_epochs or min_steps is set": trainer.get("min_epochs") or trainer.get("min_steps"),
        "model.scheduler cycles momentum": schedule.get("cycle_momentum", "Cycl" in str(schedule.get("_target_"))),
        "it profiles or detects anomalies": trainer.get("profiler") or trainer.get("detect_anomaly"),
        f"callbacks.{others[0] if others else ''} is not run for stacked jobs": others,
        "checkpoints due within epochs": checkpoint.get("every_n_train_steps") or checkpoint.get("train_time_interval"),
        unstackable_optimizer(model["optimizer"]): unstackable_optimizer(model["optimizer"]),
    }
    reason = next((why for why, refuses in reasons.items() if refuses), None)
    if reason:
        return reason, ""
    shared = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in PER_JOB]))
    shared["model"] = {k: v for k, v in model.items() if k not in ("optimizer", "init")}
    shared["optimizer"] = optimizer_kind(model["optimizer"])
    shared["batch_size"] = OmegaConf.select(cfg, "data.batch_size")  # the steps of an epoch
    env = OmegaConf.select(cfg, "hydra.job.env_set")
    shared["env_set"] = OmegaConf.to_container(env) if OmegaConf.is_config(env) else {}
    return None, json.dumps(shared, sort_keys=True, default=str)


def resumed_key(sweep_config: DictConfig) -> tuple[str | None, str]:
    """``group_key`` of a job of a sweep being finished: on its own when finished, else with its step's jobs."""
    import torch

    job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    if job_state(job_dir)[0] == "finished":
        return "it has finished", ""
    saved = torch.load(job_dir / LAST, "cpu", weights_only=True) if (job_dir / LAST).is_file() else {}
    stopped = saved.get("deepbasics", {}).get("stopped")  # trained: its end is written as a run of its own's
    reason, key = ("it stopped early", "") if stopped else group_key(sweep_config, finishing=True)
    return reason, f"{key} from step {saved.get('global_step', 0)}" if reason is None else key


class VectorizedLauncher(Launcher):
    def __init__(self, group_size: int | None = None, submitit: DictConfig | None = None) -> None:
        self.group_size, self.submitit = group_size, submitit
        self.checked_configs: dict[tuple[str, ...], DictConfig] = {}  # the grid sweeper's, for each batch

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        log.info(f"Launching {len(job_overrides)} jobs, stacked where they share a model shape and schedule")
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        from deepbasics.run.group import STOP, forked_map

        configs, groups, solo = self.plan(job_overrides, initial_job_idx)
        for idx, why in sorted(solo.items()):
            log.info(f"#{idx} runs on its own: {why}")
        returns: dict[int, JobReturn] = {}
        STOP.clear()
        started = [self._start_group(chunk, [configs[i] for i in chunk]) for chunk in groups]
        if self.submitit:  # a task per group and per solo job (SLURM's, or processes here)
            trained = self._on_cluster(started, {idx: configs[idx] for idx in solo}, returns)
        else:  # a process per group, as many at once as cores; each finds its group in what it inherited
            trained = forked_map(lambda k: _train_group(started[k]), list(range(len(started))), each=1)
        STOP.clear()  # it stopped what it had to: a run later in this process trains as usual
        flat = [o for outs in trained for o in (outs if isinstance(outs, list) else [outs])]
        stop = next((o for o in flat if isinstance(o, Interrupted)), None)
        stop = stop or Interrupted(f"SIGINT: stopped before training; {AGAIN}", 130, 0)
        for (indices, sweep_configs, jobs, _), outcomes in zip(started, trained, strict=True):
            outcomes = outcomes if isinstance(outcomes, list) else [stop] * len(indices)  # a group that did not start
            for idx, sweep_config, (ret, _), outcome in zip(indices, sweep_configs, jobs, outcomes, strict=True):
                returns[idx] = self._end(sweep_config, ret, outcome)
        for idx in sorted(set(solo) - set(returns)):
            returns[idx] = run_job(
                self.task_function, configs[idx], "hydra.sweep.dir", "hydra.sweep.subdir", self.hydra_context
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[idx] for idx in range(initial_job_idx, initial_job_idx + len(job_overrides))]

    def plan(self, job_overrides, initial_job_idx: int) -> tuple[dict[int, DictConfig], list[list[int]], dict]:
        """Each job's config by number, the stacked groups (group_size jobs at most) and the solo jobs with why."""
        configs, groups, solo = {}, {}, {}
        loader = SweepConfigs(self.hydra_context.config_loader, self.config)
        for idx, overrides in enumerate(job_overrides, initial_job_idx):  # each config the sweeper checked, once
            configs[idx] = self.checked_configs.pop(tuple(overrides), None) or loader.load(list(overrides))
            with open_dict(configs[idx]):
                configs[idx].hydra.job.id = configs[idx].hydra.job.num = idx
            try:  # a job of a sweep being finished groups by the state it is in
                reason, key = (resumed_key if configs[idx].get("resume") == "auto" else group_key)(configs[idx])
            except Exception as err:  # the job itself will report it when it runs
                reason = f"its config does not resolve ({type(err).__name__}: {str(err).splitlines()[0]})"
            if reason:
                solo[idx] = reason
            else:
                groups.setdefault(key, []).append(idx)
        from deepbasics.run.group import usable_cores

        chunks, cores = [], usable_cores()
        for members in groups.values():
            if len(members) == 1:
                solo[members[0]] = "no other job of this batch shares its model shape, optimizer kind and schedule"
            else:  # by default a group per core, of 100 jobs at least (below that a step's fixed cost is most of it)
                size = self.group_size or max(100, -(-len(job_overrides) // cores))
                chunks += [members[start : start + size] for start in range(0, len(members), size)]
        return configs, chunks, solo

    def _start_group(self, indices: list[int], sweep_configs: list[DictConfig]) -> tuple:
        """Each job of a group started as run_job starts it (its .hydra/ files written before it trains, so that a
        report after a kill finds the job): (numbers, sweep configs, (JobReturn, config or error) each, seconds)."""
        began, writes = time.perf_counter(), []
        previous = HydraConfig.instance().cfg
        started = [self._start(c, writes) for c in sweep_configs]
        HydraConfig.instance().cfg = previous  # as run_job leaves it
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for cfg, path in writes:
            path.parent.mkdir(parents=True, exist_ok=True)
            text = yaml.dump(  # PyYAML's C dumper: a third of OmegaConf.save's time, the same config read back
                OmegaConf.to_container(cfg, enum_to_str=True), Dumper=DUMPER, sort_keys=False, allow_unicode=True
            )
            path.write_text(text)
        return indices, sweep_configs, started, time.perf_counter() - began

    def _on_cluster(self, started: list, solo: dict[int, DictConfig], returns: dict) -> list:
        """Each group, and each job that trains on its own, a task of submitit's executor, submitted at once: the
        groups' outcomes (a task that dies fails its jobs in one line); the solo jobs' JobReturns into ``returns``."""
        import submitit

        from deepbasics.run.group import Job, Run

        options = OmegaConf.to_container(self.submitit, resolve=True)
        executor = submitit.AutoExecutor(options.pop("folder"), cluster=options.pop("cluster"))
        executor.update_parameters(**options)
        with executor.batch():
            tasks = [executor.submit(_group_task, self.config.hydra.hydra_logging, group) for group in started]
            alone = {idx: executor.submit(_job_task, Singleton.get_state(), self, cfg) for idx, cfg in solo.items()}

        def died(task, jobs: list) -> RunFailed:
            """Killed, out of time or memory: each of the task's jobs fails, in one line naming the task's log."""
            failed = RunFailed(f"task {task.job_id} ended ({task.state}) with no result; see {task.paths.stderr}")
            for _, cfg in jobs:
                if isinstance(cfg, DictConfig):
                    Job(cfg, "", Run.of(cfg)).fail(failed)
            return failed

        trained = []
        for task, (_, _, jobs, _) in zip(tasks, started, strict=True):
            try:
                trained.append(task.result())
            except Exception:
                trained.append([died(task, jobs)] * len(jobs))
        for idx, task in alone.items():
            try:
                returns[idx] = task.result()
            except Exception:  # as a group's: its JobReturn as run_job would give it for that failure
                _, _, (job,), _ = self._start_group([idx], [solo[idx]])  # its HydraConfig and logging restored
                returns[idx] = self._end(solo[idx], job[0], died(task, [job]))
        return trained

    def _start(self, config: DictConfig, writes: list) -> tuple[JobReturn, DictConfig | Exception]:
        """What run_job does before the task (its .hydra/ files go to ``writes``) without its two copies of the
        whole config (half its cost for these small jobs); and the job's config, resolved for its task."""
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
            writes += [(task_cfg, files / "config.yaml"), (hydra_cfg, files / "hydra.yaml")]
            writes.append((config.hydra.overrides.task, files / "overrides.yaml"))
        configure_log(hydra_cfg.hydra.job_logging, hydra_cfg.hydra.verbose)
        with env_override(hydra_cfg.hydra.job.env_set):
            self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
        try:
            cfg = OmegaConf.create(OmegaConf.to_container(task_cfg, resolve=True))
        except Exception as err:  # the job fails alone, through the error policy
            return ret, err
        if cfg.get("resume") == "auto":  # its own last.ckpt, or a start
            cfg.resume = resumed_job(cfg.paths.run_dir)
        return ret, cfg

    def _end(self, sweep_config: DictConfig, ret: JobReturn, outcome: Any) -> JobReturn:
        """The job's JobReturn as run_job would give it for a task with this outcome, and on_job_end."""

        def task(cfg: DictConfig) -> Any:
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        previous = HydraConfig.instance().cfg
        HydraConfig.instance().cfg = ret.hydra_cfg  # the job's, as _start set it (set_config copies it again)
        try:
            try:
                ret.return_value = guarded(task, ret.cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as err:  # what the error policy lets through (an unexpected error)
                ret.return_value, ret.status = err, JobStatus.FAILED
            self.hydra_context.callbacks.on_job_end(config=sweep_config, job_return=ret)
        finally:
            HydraConfig.instance().cfg = previous
        return ret


def _train_group(group: tuple) -> list | None:
    """Each job's outcome (its config's error, or what it trained to); None: the sweep stopped before this group."""
    from deepbasics.run.group import STOP, train_group

    indices, sweep_configs, started, spent = group
    if STOP.is_set():
        return None
    began, timings = time.perf_counter(), {}
    outcomes = dict(enumerate(cfg for _, cfg in started))  # the resolved config, or why it does not resolve
    ready = [k for k, cfg in outcomes.items() if isinstance(cfg, DictConfig)]
    runs = consecutive([indices[k] for k in ready])  # job numbers, consecutive ones as ranges: #0-#99, #101
    numbers = ", ".join(f"#{run[0]}" if len(run) == 1 else f"#{run[0]}-#{run[-1]}" for run in runs)
    log.info(f"training {len(ready)} job{'s' * (len(ready) != 1)} stacked: {numbers}")
    with env_override(sweep_configs[ready[0]].hydra.job.env_set if ready else {}):  # one: in the group's key
        trained = train_group([outcomes[k] for k in ready], [str(indices[k]) for k in ready], timings)
    outcomes.update(zip(ready, trained, strict=True))
    if any(isinstance(outcome, Interrupted) for outcome in trained):
        STOP.set()  # the groups after this one do not start
    spent, fit = spent + time.perf_counter() - began, timings.get("fit", 0.0)
    outside = f"{1000 * (spent - fit) / len(indices):.0f} ms a job outside the fit"
    log.info(f"{len(indices)} jobs stacked in {spent:.1f} s: fit {fit:.1f} s, {outside}")
    return [outcomes[k] for k in range(len(indices))]


def _group_task(logging: DictConfig, group: tuple) -> list | None:
    """A group trained on a task of its own (submitit): its lines in the task's log, as the sweep's own."""
    configure_log(logging)
    return _train_group(group)


def _job_task(state: dict, launcher: VectorizedLauncher, config: DictConfig) -> JobReturn:
    """A job that trains on its own, on a task of its own, as Hydra's submitit launcher runs one."""
    Singleton.set_state(state)
    setup_globals()
    return run_job(launcher.task_function, config, "hydra.sweep.dir", "hydra.sweep.subdir", launcher.hydra_context)
