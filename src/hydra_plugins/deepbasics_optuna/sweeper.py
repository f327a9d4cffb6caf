"""`hydra/sweeper=optuna`: an Optuna (>= 4) study as a sweep, configured as hydra-optuna-sweeper is, ``n_jobs``
trials per batch. optuna is imported only when a sweep runs (Hydra imports every plugin at start-up)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from deepbasics.config.sweep_dir import STATE, consecutive
from deepbasics.errors import ConfigError

log = logging.getLogger(__name__)


def distribution(override: Override):
    """The Optuna distribution of a sweep override, read as hydra-optuna-sweeper does (range(a, b): a..b inclusive)."""
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
        custom_search_space: str | None = None,  # a function(cfg, trial) that suggests more values itself
    ) -> None:
        self.sampler, self.direction, self.storage = sampler, str(direction), storage
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.params, self.custom_search_space = dict(params or {}), custom_search_space

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Distributions by key (params, then sweeps on the command line) and the fixed overrides."""
        params = [f"{key}={value}" for key, value in self.params.items()]
        space, fixed = {}, []
        for override in OverridesParser.create().parse_overrides([*params, *arguments]):
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(override)
            else:
                fixed.append(override.input_line)
                space.pop(override.get_key_element(), None)  # the command line fixes a searched key
        return space, fixed

    def sweep(self, arguments: list[str]) -> list:
        import optuna
        from optuna.trial import TrialState

        if not isinstance(self.n_jobs, int) or self.n_jobs <= 0:
            raise ConfigError(f"hydra.sweeper.n_jobs={self.n_jobs!r} must be a positive number of trials per batch")
        space, fixed = self._search_space(arguments)
        mode = (self.config.get("monitor") or {}).get("mode")
        wanted = {"min": "minimize", "max": "maximize"}.get(mode, self.direction)
        if self.direction != wanted:
            raise ConfigError(
                f"hydra.sweeper.direction={self.direction} but monitor.mode={mode}: each job returns its monitored"
                f" value, so set direction to {wanted}"
            )
        try:  # Hydra instantiates the sweeper's config recursively: the sampler usually arrives built
            sampler = instantiate(self.sampler) if OmegaConf.is_config(self.sampler) else self.sampler
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=sampler,
                direction=self.direction,
                load_if_exists=True,
            )
            custom = get_method(self.custom_search_space) if self.custom_search_space else None
        except Exception as err:  # another direction than the stored study's, a storage that cannot open...
            raise ConfigError(f"hydra.sweeper: {str(err).strip().splitlines()[0]}") from None
        # The sweep's first trial, recorded: a resume counts n_trials from it and reruns trials a kill left running
        record = Path(str(self.config.hydra.sweep.dir)) / STATE / "optuna.yaml"
        if self.config.get("resume") and record.is_file():
            first = int(OmegaConf.load(record).first_trial)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            pending = [trial for trial in running if trial.number >= first]
        else:
            first, pending = len(study.trials), []
            record.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save({"study_name": study.study_name, "first_trial": first}, record)
        done = len([t for t in study.get_trials(deepcopy=False) if t.number >= first])
        earlier = f"{first} earlier trials" + (f", {done} of this sweep" if done else "")
        log.info(f"Optuna study {study.study_name}: {earlier}; {self.n_trials - done + len(pending)} to run")
        # what a kill left running: again, in their own job directories
        results = [self._launch(study, run, fixed, first) for run in consecutive(pending, lambda trial: trial.number)]
        while done < self.n_trials:
            # Optuna's own sampling of the search space (fixed_distributions), then the user's function's
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            results.append(self._launch(study, trials, fixed, first, custom))
            done += len(trials)
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            log.info(f"best trial {study.best_trial.number}: {study.best_value} with {study.best_params}")
            results_file = Path(self.config.hydra.sweep.dir) / "optimization_results.yaml"
            best = {"name": "optuna", "study_name": study.study_name, "best_params": study.best_params}
            OmegaConf.save(best | {"best_value": study.best_value}, results_file)
        return results

    def _launch(self, study, trials: list, fixed: list[str], first: int, custom=None):
        """Consecutive trials (new ones given ``custom``'s values first) launched as one batch, each told its value or
        FAIL (it raised, or returned a failed job's infinity); a signal (exit 130/143) leaves them for resume=auto."""
        from optuna.trial import TrialState

        try:
            for trial in trials if custom is not None else ():
                custom(self.config, trial)
            batch = [[*fixed, *(f"{key}={value}" for key, value in trial.params.items())] for trial in trials]
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number - first)
        except Exception:  # a broken search space or batch: its trials are not left RUNNING (a signal leaves them)
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
