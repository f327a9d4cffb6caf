"""`hydra/sweeper=optuna`: an Optuna (>= 4) study as a Hydra sweep.

The config keys are hydra-optuna-sweeper's (sampler, direction, storage, study_name, n_trials, n_jobs, params
with choice / range / interval / tag(log)), so configs written for it run unchanged. Trials are asked
``n_jobs`` at a time and handed to the launcher as one batch (a launcher that trains a batch together sees
the whole batch). A job that fails (its value is not a finite number, or it raised) is told to Optuna as a
FAIL trial, never as a made-up value. With an sqlite ``storage`` the study lives on: the same command again
adds ``n_trials`` more trials to it.

Hydra imports every module under hydra_plugins at start-up, so optuna is imported only when a sweep runs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from deepbasics.errors import ConfigError

log = logging.getLogger(__name__)


def distribution(override: Override):
    """The Optuna distribution a sweep override describes (hydra-optuna-sweeper's reading of the grammar:
    ``range(a, b)`` samples a..b inclusive)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    log_scale = isinstance(value, (RangeSweep, IntervalSweep)) and "log" in value.tags
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step, log=log_scale)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step), log=log_scale)
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ConfigError(f"{override.input_line}: use choice(...), range(...) or interval(...) to search a value")


def _suggest(trial, key: str, dist) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    suggest = trial.suggest_int if isinstance(dist, IntDistribution) else trial.suggest_float
    return suggest(key, dist.low, dist.high, step=dist.step, log=dist.log)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any = "minimize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 2,
        params: dict | None = None,
        custom_search_space: str | None = None,
    ) -> None:
        self.sampler_conf, self.direction, self.storage = sampler, str(direction), storage
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.params = dict(params or {})
        self.custom_search_space = custom_search_space

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Distributions by key (params, then sweeps on the command line) and the fixed overrides."""
        parser = OverridesParser.create()
        lines = [f"{k}={v}" for k, v in self.params.items()]
        overrides = parser.parse_overrides(lines) + parser.parse_overrides(arguments)
        space, fixed = {}, []
        for override in overrides:
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(override)
            else:
                fixed.append(override.input_line)
                space.pop(override.get_key_element(), None)  # the command line fixes a searched key
        return space, fixed

    def sweep(self, arguments: list[str]) -> list:
        import optuna
        from hydra.utils import get_method, instantiate
        from optuna.trial import TrialState

        if not isinstance(self.n_jobs, int) or self.n_jobs <= 0:
            raise ConfigError(f"hydra.sweeper.n_jobs={self.n_jobs!r} must be a positive number of trials per batch")
        space, fixed = self._search_space(arguments)
        mode = (self.config.get("monitor") or {}).get("mode")
        wanted = {"min": "minimize", "max": "maximize"}.get(mode, self.direction)
        if self.direction != wanted:  # each job returns its one monitored value
            raise ConfigError(f"hydra.sweeper.direction={self.direction} but monitor.mode={mode}: each job returns"
                              f" its monitored value, so set direction to {wanted}")  # fmt: skip
        try:  # Hydra instantiates the sweeper's config recursively: the sampler usually arrives built
            sampler = instantiate(self.sampler_conf) if OmegaConf.is_config(self.sampler_conf) else self.sampler_conf
            study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                        direction=self.direction, load_if_exists=True)  # fmt: skip
            custom = get_method(self.custom_search_space) if self.custom_search_space else None
        except Exception as err:  # another direction than the stored study's, a storage that cannot open...
            raise ConfigError(f"hydra.sweeper: {str(err).strip().splitlines()[0]}") from None
        first, pending = self._this_sweep(study)
        done = len([t for t in study.get_trials(deepcopy=False) if t.number >= first])
        earlier = f"{first} earlier trials" + (f", {done} of this sweep" if done else "")
        log.info(f"Optuna study {study.study_name}: {earlier}; {self.n_trials - done + len(pending)} to run")
        results = []
        for run in _consecutive(pending):  # what a kill left running: again, in their own job directories
            batch = [[*fixed, *(f"{key}={value}" for key, value in trial.params.items())] for trial in run]
            results.append(self._launch(study, run, batch, run[0].number - first))
        while done < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - done))]
            try:
                for trial in trials:
                    for key, dist in space.items():
                        _suggest(trial, key, dist)
                    if custom is not None:  # a function(cfg, trial) that suggests more values itself
                        custom(self.config, trial)
            except BaseException:  # a broken search space: its trials are not left RUNNING in the study
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            batch = [[*fixed, *(f"{key}={value}" for key, value in trial.params.items())] for trial in trials]
            results.append(self._launch(study, trials, batch, trials[0].number - first))
            done += len(trials)
        if any(t.state == TrialState.COMPLETE for t in study.trials):
            log.info(f"best trial {study.best_trial.number}: {study.best_value} with {study.best_params}")
            results_file = Path(self.config.hydra.sweep.dir) / "optimization_results.yaml"
            best = {"name": "optuna", "study_name": study.study_name, "best_params": study.best_params}
            OmegaConf.save(OmegaConf.create(best | {"best_value": study.best_value}), results_file)
        return results

    def _this_sweep(self, study) -> tuple[int, list]:
        """The number of the sweep's first trial (recorded in its directory, so a resumed sweep counts its
        n_trials from there) and the trials of it a kill left running."""
        from optuna.trial import TrialState

        from deepbasics.config.sweep_dir import STATE

        record = Path(str(self.config.hydra.sweep.dir)) / STATE / "optuna.yaml"
        if self.config.get("resume") and record.is_file():
            first = int(OmegaConf.load(record).first_trial)
            running = [
                t for t in study.get_trials(deepcopy=False) if t.number >= first and t.state == TrialState.RUNNING
            ]
            return first, running
        first = len(study.trials)
        record.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create({"study_name": study.study_name, "first_trial": first}), record)
        return first, []

    def _launch(self, study, trials: list, batch: list[list[str]], job_idx: int):
        """One batch of trials launched together, as jobs ``job_idx``...; each told its value, or FAIL when it
        failed (raised, or returned a value that is not a finite number: deepbasics' failed jobs return the
        worst infinity so that other sweepers go on). A job a signal stopped (exit 130/143) leaves its trial
        running: resume=auto continues it."""
        from optuna.trial import TrialState

        try:
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=job_idx)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a broken batch: its trials are not left RUNNING in the study
            for trial in trials:
                study.tell(trial.number, state=TrialState.FAIL)
            raise
        for trial, job in zip(trials, returns, strict=True):
            try:
                value = float(job.return_value)  # Hydra re-raises the job's exception here
            except Exception:
                value = math.nan
            if math.isfinite(value):
                study.tell(trial.number, value)
            else:
                study.tell(trial.number, state=TrialState.FAIL)
        return returns


def _consecutive(trials: list) -> list[list]:
    """Trials in runs of consecutive numbers (each launched as one batch of consecutive job numbers)."""
    runs: list[list] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if runs and trial.number == runs[-1][-1].number + 1:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs
