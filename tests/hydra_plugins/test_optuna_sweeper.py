"""The project's Optuna (>= 4) sweeper: hydra-optuna-sweeper's keys, batches of n_jobs trials for the
launcher, failed jobs told as FAIL trials, a seeded sampler, a study that lives on in sqlite."""

from __future__ import annotations

import math

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from conftest import run_in_this_process
from hydra_plugins.deepbasics_optuna.sweeper import OptunaSweeper, distribution


def _dist(line: str):
    return distribution(OverridesParser.create().parse_override(line))


def test_the_grammar_maps_to_optuna_distributions_as_before():
    assert _dist("a=choice(1,2,x)") == optuna.distributions.CategoricalDistribution([1, 2, "x"])
    assert _dist("a=range(2,12)") == optuna.distributions.IntDistribution(2, 12)  # hi included, as it was
    assert _dist("a=range(0.1,0.5,0.1)") == optuna.distributions.FloatDistribution(0.1, 0.5, step=0.1)
    assert _dist("a=interval(0.1,1.0)") == optuna.distributions.FloatDistribution(0.1, 1.0)
    assert _dist("a=tag(log,interval(0.001,1.0))") == optuna.distributions.FloatDistribution(0.001, 1.0, log=True)
    # Hydra reads interval bounds as floats, so an interval is always a float search, as it was
    assert _dist("a=tag(log,interval(1,64))") == optuna.distributions.FloatDistribution(1, 64, log=True)


class RecordingLauncher:
    """Stands in for Hydra's launcher: records each batch; lr >= 0.5 fails (a diverged run's inf, or raises)."""

    def __init__(self):
        self.batches = []

    def launch(self, batch, initial_job_idx):
        self.batches.append((initial_job_idx, [list(b) for b in batch]))
        returns = []
        for overrides in batch:
            lr = float(dict(o.split("=", 1) for o in overrides)["lr"])
            job = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=(lr - 0.1) ** 2)
            if lr >= 0.8:
                job.status, job._return_value = JobStatus.FAILED, RuntimeError("diverged")
            elif lr >= 0.5:
                job._return_value = math.inf
            returns.append(job)
        return returns


def _sweeper(tmp_path, n_trials=7, n_jobs=3, seed=5):
    sampler = optuna.samplers.RandomSampler(seed=seed)
    sweeper = OptunaSweeper(
        sampler=sampler, storage=f"sqlite:///{tmp_path}/study.db", study_name="s", n_trials=n_trials,
        n_jobs=n_jobs, params={"lr": "interval(0.0, 1.0)", "hidden": "choice(2, 4)"},
    )  # fmt: skip
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.launcher = RecordingLauncher()
    sweeper.validate_batch_is_legal = lambda batch: None
    return sweeper


def test_trials_go_to_the_launcher_in_batches_and_failures_are_fail_trials(tmp_path):
    sweeper = _sweeper(tmp_path)
    sweeper.sweep(["seed=3"])
    batches = sweeper.launcher.batches
    assert [(idx, len(b)) for idx, b in batches] == [(0, 3), (3, 3), (6, 1)]
    assert all("seed=3" in job and any(o.startswith("hidden=") for o in job) for _, b in batches for job in b)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db")
    assert len(study.trials) == 7
    for trial in study.trials:
        failed = trial.params["lr"] >= 0.5
        assert trial.state.name == ("FAIL" if failed else "COMPLETE"), trial.params
        assert failed or trial.value == pytest.approx((trial.params["lr"] - 0.1) ** 2)
    assert {t.state.name for t in study.trials} == {"FAIL", "COMPLETE"}, "the seed should give both kinds"
    saved = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert saved.best_value == study.best_value and dict(saved.best_params) == study.best_params


def test_a_seeded_sampler_repeats_and_the_study_lives_on(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    _sweeper(first, n_trials=4).sweep([])
    _sweeper(second, n_trials=4).sweep([])
    a = optuna.load_study(study_name="s", storage=f"sqlite:///{first}/study.db").trials
    b = optuna.load_study(study_name="s", storage=f"sqlite:///{second}/study.db").trials
    assert [t.params for t in a] == [t.params for t in b]
    _sweeper(first, n_trials=2, seed=6).sweep([])  # the same command again adds trials
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{first}/study.db").trials) == 6


@pytest.mark.slow
def test_a_diverging_trial_is_a_fail_trial_through_the_command(tmp_path, monkeypatch, capfd):
    args = [
        "hparams_search=linear_scores_optuna", "epochs=100", "log_every=10", "val_every=10",
        "callbacks.model_checkpoint.every_n_epochs=10",
        "hydra.sweeper.study_name=fails", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=1",  # TPE: its first 5 trials are random draws
        "hydra.sweeper.params={model.optimizer.lr:'choice(0.01,0.5)'}",
    ]  # fmt: skip
    proc = run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd)
    assert proc.returncode == 1, proc.stderr  # a failed job fails the sweep, as with the basic sweeper
    study = optuna.load_study(study_name="fails", storage=f"sqlite:///{tmp_path}/outputs/optuna.db")
    states = {t.params["model.optimizer.lr"]: t.state.name for t in study.trials}
    assert states == {0.01: "COMPLETE", 0.5: "FAIL"}
    assert all(t.value is None for t in study.trials if t.state.name == "FAIL"), "no made-up value"
