"""``hydra/launcher=vectorized``: the jobs of a multirun batch (a grid, or an Optuna sweeper's n_jobs
trials) that can share a stacked model train as one (``deepbasics.run.group``); the others run one by one
as the basic launcher runs them. Every job gets what a basic-launcher job gets: its directory with
``.hydra/``, its log file, Hydra's job callbacks and its JobReturn with the monitored value."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# Keys a group's jobs may differ in (the rest of the config must be equal): the seed, where each job writes,
# how it logs, its data (stacked too; shapes are checked once built), and its optimizer's values.
PER_JOB = ("seed", "paths", "logger", "data", "progress")


def group_key(cfg: DictConfig) -> tuple[str | None, str]:
    """(reason this job cannot be stacked, None) or (None, the key its group shares)."""
    from deepbasics.models.stacked import optimizer_kind, unstackable_optimizer

    if cfg.get("resume"):
        return "it resumes a run", ""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if model.get("scheduler"):
        return "model.scheduler is set (the stacked step has no learning-rate schedulers)", ""
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
    shared = OmegaConf.to_container(cfg, resolve=False)
    for key in PER_JOB:
        shared.pop(key, None)
    shared["model"] = {k: v for k, v in model.items() if k != "optimizer"}
    shared["model"]["net"] = {k: v for k, v in model["net"].items() if k != "init"}
    shared["optimizer"] = optimizer_kind(model["optimizer"])
    shared["trainer"] = trainer
    return None, json.dumps(shared, sort_keys=True, default=str)


class SweepConfigs:
    """Each job's config exactly as Hydra's ``load_sweep_config`` makes it, with the composition (config
    files, defaults lists: about 90 ms a job here) done once per set of config-group choices. Jobs differing
    only in values (model.optimizer.lr=0.1 seed=3) copy that composition and get their values the way Hydra
    applies them after composing, with the override lists and override_dirname Hydra records."""

    def __init__(self, loader, master: DictConfig) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader, self.master, self.parser = loader, master, OverridesParser.create()
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def load(self, overrides: list[str]) -> DictConfig:
        import copy

        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

        parsed = self.parser.parse_overrides(overrides)
        repo = self.loader.repository
        values = [o for o in parsed if isinstance(o.value(), dict) or not repo.group_exists(o.key_or_group)]
        choices = tuple(o.input_line for o in parsed if o not in values)
        if choices not in self.composed:
            self.composed[choices] = self.loader.load_sweep_config(self.master, list(choices))
        cfg = copy.deepcopy(self.composed[choices])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        hydra, job = cfg.hydra, cfg.hydra.job.config.override_dirname
        hydra.overrides.hydra = [
            *self.master.hydra.overrides.hydra,
            *(o.input_line for o in parsed if o.is_hydra_override()),
        ]
        task = [o for o in parsed if not o.is_hydra_override()]
        hydra.overrides.task = [o.input_line for o in task]
        hydra.job.override_dirname = get_overrides_dirname(task, job.exclude_keys, job.item_sep, job.kv_sep)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg


class _StartOnly:
    """Hydra's job callbacks with on_job_end held back: a stacked job ends after its whole group trained."""

    def __init__(self, callbacks) -> None:
        self._callbacks = callbacks

    def on_job_start(self, **kwargs) -> None:
        self._callbacks.on_job_start(**kwargs)

    def on_job_end(self, **kwargs) -> None:
        pass


class VectorizedLauncher(Launcher):
    def __init__(self, group_size: int | None = None) -> None:
        super().__init__()
        self.group_size = group_size
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, stacked where they share a model shape and schedule")
        configs, groups, solo = [], {}, {}
        loader = SweepConfigs(self.hydra_context.config_loader, self.config)
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
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
        returns: dict[int, JobReturn] = {}
        for idx in sorted(solo):
            log.info(f"#{idx} runs on its own: {solo[idx]}")
            returns[idx] = self._run(configs[idx - initial_job_idx], self.task_function, self.hydra_context)
        for members in [m for m in groups.values() if len(m) > 1]:
            size = self.group_size or len(members)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                returns.update(self._train_stacked(chunk, [configs[i - initial_job_idx] for i in chunk]))
        return [returns[idx] for idx in range(initial_job_idx, initial_job_idx + len(job_overrides))]

    def _key(self, sweep_config: DictConfig) -> tuple[str | None, str]:
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(sweep_config)  # interpolations may read the job's hydra node
        try:
            task = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
            return group_key(task)
        except Exception as err:  # the job itself will report it when it runs
            return f"its config does not resolve ({type(err).__name__})", ""
        finally:
            HydraConfig.instance().cfg = previous

    def _run(self, sweep_config: DictConfig, task: TaskFunction, context: HydraContext) -> JobReturn:
        ret = run_job(hydra_context=context, task_function=task, config=sweep_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")  # fmt: skip
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _train_stacked(self, indices: list[int], sweep_configs: list[DictConfig]) -> dict[int, JobReturn]:
        from deepbasics.cli.app import guarded
        from deepbasics.run.group import train_group

        # Each job's directory, .hydra/ files, log file and on_job_start, as run_job makes them; the task
        # here only resolves the job's config (its run directory comes from Hydra's job node).
        started = HydraContext(
            config_loader=self.hydra_context.config_loader, callbacks=_StartOnly(self.hydra_context.callbacks)
        )
        prepared = [self._run(c, _resolved, started) for c in sweep_configs]
        ready = [k for k, ret in enumerate(prepared) if ret.status == JobStatus.COMPLETED]
        log.info(f"training {len(ready)} jobs stacked: #{', #'.join(str(indices[k]) for k in ready)}")
        outcomes: list[Any] = [ret._return_value for ret in prepared]  # a failed preparation: its error
        chatter = logging.getLogger("lightning.pytorch")  # accelerator notes and tips: not once per group
        level = chatter.level
        chatter.setLevel(logging.WARNING)
        try:
            trained = train_group([prepared[k].return_value for k in ready], [str(indices[k]) for k in ready])
        finally:
            chatter.setLevel(level)
        for k, outcome in zip(ready, trained, strict=True):
            outcomes[k] = outcome
        returns = {}
        for idx, sweep_config, ret, outcome in zip(indices, sweep_configs, prepared, outcomes, strict=True):
            returns[idx] = self._end(sweep_config, ret, outcome, guarded)
        return returns

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


def _resolved(cfg: DictConfig) -> DictConfig:
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def _outcome(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
