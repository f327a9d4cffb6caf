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
        self.sampler_conf, self.direction, self.storage = sampler, direction, storage
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
        # Hydra instantiates the sweeper's config recursively, so the sampler usually arrives built.
        sampler = self.sampler_conf
        if isinstance(sampler, (dict, DictConfig)):
            sampler = instantiate(sampler)
        many = OmegaConf.is_list(self.direction) or isinstance(self.direction, list)
        directions = [str(d) for d in (self.direction if many else [self.direction])]
        mode = (self.config.get("monitor") or {}).get("mode")
        if mode and directions != [{"min": "minimize", "max": "maximize"}[mode]]:
            raise ConfigError(
                f"hydra.sweeper.direction={self.direction} but monitor.mode={mode}: each job returns its one"
                f" monitored value, so set direction to {'minimize' if mode == 'min' else 'maximize'}"
            )
        try:
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=sampler,
                directions=directions,
                load_if_exists=True,
            )
            custom = get_method(self.custom_search_space) if self.custom_search_space else None
        except Exception as err:  # another direction than the stored study's, a storage that cannot open...
            raise ConfigError(f"hydra.sweeper: {str(err).strip().splitlines()[0]}") from None
        first, pending = self._this_sweep(study)
        mine = [t for t in study.get_trials(deepcopy=False) if t.number >= first]
        earlier = f"{first} earlier trials" + (f", {len(mine)} of this sweep" if mine else "")
        log.info(f"Optuna study {study.study_name}: {earlier}; {self.n_trials - len(mine) + len(pending)} to run")
        results = []
        for run in _consecutive(pending):  # what a kill left running: again, in their own job directories
            batch = [[*fixed, *(f"{key}={value}" for key, value in trial.params.items())] for trial in run]
            results.append(self._launch(study, run, batch, run[0].number - first, len(directions)))
        done = len(mine)
        while done < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - done))]
            try:
                batch = []
                for trial in trials:
                    for key, dist in space.items():
                        _suggest(trial, key, dist)
                    if custom is not None:  # a function(cfg, trial) that suggests more values itself
                        custom(self.config, trial)
                    batch.append([*fixed, *(f"{key}={value}" for key, value in trial.params.items())])
            except BaseException:  # a broken search space: its trials are not left RUNNING in the study
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            results.append(self._launch(study, trials, batch, trials[0].number - first, len(directions)))
            done += len(trials)
        self._write_results(study, len(directions))
        return results

    def _this_sweep(self, study) -> tuple[int, list]:
        """The number of the sweep's first trial (recorded in its directory, so a resumed sweep counts its
        n_trials from there) and the trials of it a kill left running."""
        from optuna.trial import TrialState

        from deepbasics.config.sweep_dir import STATE

        record = Path(str(self.config.hydra.sweep.dir)) / STATE / "optuna.yaml"
        if self.config.get("resume") and record.is_file():
            first = int(OmegaConf.load(record).first_trial)
            trials = study.get_trials(deepcopy=False)
            return first, [t for t in trials if t.number >= first and t.state == TrialState.RUNNING]
        first = len(study.trials)
        record.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create({"study_name": study.study_name, "first_trial": first}), record)
        return first, []

    def _launch(self, study, trials: list, batch: list[list[str]], job_idx: int, objectives: int):
        """One batch of trials launched together, as jobs ``job_idx``...; each told its value, or FAIL. A job
        a signal stopped (exit 130/143) leaves its trial running: resume=auto continues it."""
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
            values = _values(job, objectives)
            if values is None:
                study.tell(trial.number, state=TrialState.FAIL)
            else:
                study.tell(trial.number, values if objectives > 1 else values[0])
        return returns

    def _write_results(self, study, objectives: int) -> None:
        from optuna.trial import TrialState

        if not any(t.state == TrialState.COMPLETE for t in study.trials):
            log.warning("no trial of the study completed")
            return
        if objectives == 1:
            best = {"best_params": study.best_params, "best_value": study.best_value}
            log.info(f"best trial {study.best_trial.number}: {study.best_value} with {study.best_params}")
        else:
            best = {"solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
        results = OmegaConf.create({"name": "optuna", "study_name": study.study_name, **best})
        path = Path(self.config.hydra.sweep.dir) / "optimization_results.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(results, path)


def _consecutive(trials: list) -> list[list]:
    """Trials in runs of consecutive numbers (each launched as one batch of consecutive job numbers)."""
    runs: list[list] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if runs and trial.number == runs[-1][-1].number + 1:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


def _values(job, objectives: int) -> list[float] | None:
    """The job's objective values, or None for a job that failed (raised, or returned a value that is not
    a finite number: deepbasics' failed jobs return the worst infinity so other sweepers go on)."""
    try:
        value = job.return_value
    except Exception:  # Hydra re-raises the job's exception here
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if len(values) != objectives or not all(math.isfinite(v) for v in values):
        return None
    return values
