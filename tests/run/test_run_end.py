"""Runs end right in every case, through the command line as a user types it: an early stop is a normal
finish, a kill at any point (end phase included) is repaired by resuming, one writer per run directory, files
that honour the umask, and the tutorials' own reload code on model.pt."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import BIN, read_metrics, run_cli, run_dirs, run_in_this_process

STOP_AT = Path(__file__).with_name("stop_at.py")
EARLY_STOP = (
    "+callbacks.early_stopping={_target_:lightning.pytorch.callbacks.EarlyStopping,"
    "monitor:val/loss,patience:1,min_delta:0.01}"
)
# Adam (optimizer state to restore), a val split, checkpoints every 50 epochs, points every 10.
RECIPE = [
    "experiment=blobs_mlp", "epochs=300", "log_every=10", "val_every=50",
    "callbacks.model_checkpoint.every_n_epochs=50",
    "model.optimizer._target_=torch.optim.Adam", "model.optimizer.lr=0.01",
]  # fmt: skip
END_PHASE = [
    "before:final_report",
    "after:atomic_write",
    "after:log_hparams",
    "after:save_figures",
    "before:write_json",
]


def stop_at(action: str, point: str, args: list[str], cwd: Path, wait: bool = True):
    command = [sys.executable, str(STOP_AT), action, point, *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def test_early_stopping_is_a_normal_finish(tmp_path, monkeypatch, capfd):
    args = [
        "experiment=blobs_mlp",
        "epochs=3000",
        "log_every=100",
        "val_every=100",
        "callbacks.model_checkpoint.every_n_epochs=100",
        EARLY_STOP,
    ]
    proc = run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd)
    assert proc.returncode == 0, proc.stderr
    (run,) = run_dirs(tmp_path, "blobs_mlp")
    metrics = read_metrics(run)
    assert metrics["status"] == "stopped_early"
    epoch = metrics["stopped"]["epoch"]
    assert metrics["epochs"] == epoch and 0 < epoch < 3000 and epoch % 100 == 0
    assert "did not improve" in metrics["stopped"]["reason"]
    assert set(metrics["test"]) == {"loss", "acc", "auroc"}
    assert f"stopped early at epoch {epoch}/3000" in proc.stdout and "SIGINT" not in proc.stdout
    for name in ("model.pt", "figures/fit.png", "figures/loss.png", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == epoch
    # resuming it finds it finished (no more training)
    from conftest import compose_train
    from deepbasics.run.training import train

    assert train(compose_train(*args, f"resume={run}", run_dir=run)) == metrics["monitor"]["value"]
    assert read_metrics(run) == metrics


def _same_run(reference: Path, run: Path) -> None:
    """Bit-identical ends: parameters, checkpoint contents and metrics.json numbers."""
    a, b = torch.load(reference / "model.pt"), torch.load(run / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    names = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (run / "checkpoints").iterdir())
    for name in names:
        ca = torch.load(reference / "checkpoints" / name, weights_only=True)
        cb = torch.load(run / "checkpoints" / name, weights_only=True)
        assert ca["global_step"] == cb["global_step"], name
        assert all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in ca["state_dict"]), name
        optimizers = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
        for sa, sb in zip(*(o.values() for o in optimizers), strict=True):
            assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    ma, mb = read_metrics(reference), read_metrics(run)
    for key in ("status", "epochs", "monitor", "train", "val", "test", "optimum"):
        assert ma[key] == mb[key], key
    assert Path(ma["best_checkpoint"]).name == Path(mb["best_checkpoint"]).name
    for name in ("figures/fit.png", "figures/loss.png"):
        assert (run / name).is_file(), name


def _killed_in_a_child(point: str, *overrides: str, run_dir: Path) -> int:
    """train() in a forked child that SIGKILLs itself at ``point``: a real process, really killed, without
    paying for Python, torch and Lightning to start again; returns the signal that ended it."""
    from stop_at import install

    from conftest import compose_train
    from deepbasics.run.training import train

    cfg = compose_train(*overrides, run_dir=run_dir)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            install("kill", point)
            train(cfg)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


@pytest.mark.slow
def test_ten_kills_anywhere_then_resume_end_bit_identical(tmp_path):
    from conftest import compose_train
    from deepbasics.run.training import train

    reference = tmp_path / "whole"
    train(compose_train(*RECIPE, run_dir=reference))

    rng = random.Random(13)
    kills = 0
    for attempt in range(2):  # two runs, five kills each: three while training, two in the end phase
        run = tmp_path / f"killed{attempt}"
        # Past the first checkpoint (epoch 50), so there is a run to resume; anywhere after that.
        epochs = sorted(rng.sample(range(51, 300), 3))
        points = [str(e) for e in epochs] + sorted(rng.sample(END_PHASE, 2), key=END_PHASE.index)
        for n, point in enumerate(points):
            resume = [f"resume={run}"] if n else []
            assert _killed_in_a_child(point, *RECIPE, *resume, run_dir=run) == signal.SIGKILL, point
            kills += 1
            metrics = run / "metrics.json"
            assert not metrics.exists() or read_metrics(run)["status"] != "completed", point
        if attempt == 0:  # the last resume as a user types it, once; in this process after that
            run_cli("deepbasics-train", *RECIPE, f"resume={run}", cwd=tmp_path)
        else:
            train(compose_train(*RECIPE, f"resume={run}", run_dir=run))
        assert read_metrics(run)["status"] == "completed"
        _same_run(reference, run)
    assert kills == 10


def test_sigterm_in_the_end_phase_says_so_and_a_resume_writes_the_files(tmp_path, monkeypatch, capfd):
    """SIGTERM (a cluster's, a container's stop) while the end-of-run files are written: exit 143 with the
    line that says what happened on stderr, the run recorded as interrupted, and resume=auto finishing it."""
    short = [
        "experiment=blobs_mlp",
        "epochs=100",
        "log_every=50",
        "val_every=50",
        "callbacks.model_checkpoint.every_n_epochs=50",
    ]
    stopped = stop_at("term", "before:write_json", short, tmp_path)
    assert stopped.returncode == 143
    (run,) = run_dirs(tmp_path, "blobs_mlp")
    assert stopped.stderr.strip().splitlines()[-1] == (
        "SIGTERM: stopped while writing the end-of-run files (metrics.json, model.pt, figures) after training"
        " finished at epoch 100/100; its checkpoint is saved; write them with: deepbasics-train"
        " experiment=blobs_mlp resume=auto"
    )
    assert read_metrics(run)["status"] == "interrupted"
    done = run_in_this_process("deepbasics-train", [*short, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert f"finishing {run}: training ended at epoch 100" in done.stdout
    assert read_metrics(run)["status"] == "completed" and (run / "model.pt").is_file()


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


@pytest.mark.slow
def test_one_writer_per_run_directory(tmp_path, monkeypatch, capfd):
    # a run to resume: killed at epoch 120, so last.ckpt holds epoch 100
    assert stop_at("kill", "120", RECIPE, tmp_path).returncode == -9
    (run,) = run_dirs(tmp_path, "blobs_mlp")
    holder = stop_at("pause", "200", [*RECIPE, f"resume={run}"], tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "paused").exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the first resume did not get going"
            time.sleep(0.05)
        before = _listing(run)
        second = run_in_this_process("deepbasics-train", [*RECIPE, f"resume={run}"], tmp_path, monkeypatch, capfd)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert lines[0].startswith(f"error: {run} is in use by process {holder.pid} on ")
        assert " since 20" in lines[0]
        assert _listing(run) == before, "the refused writer must leave the directory untouched"
    finally:
        holder.kill()
        holder.wait()
    # the holder died holding the lock: the next resume takes it over without help
    last = run_in_this_process("deepbasics-train", [*RECIPE, f"resume={run}"], tmp_path, monkeypatch, capfd)
    assert last.returncode == 0, last.stderr
    assert read_metrics(run)["status"] == "completed" and read_metrics(run)["epochs"] == 300


def test_outputs_honour_the_umask(tmp_path, umask=0o027, mode=0o640):
    """027, not the common 022: a mode fixed at 0644 (or mkstemp's 0600) would fail here."""
    args = [
        "experiment=blobs_mlp",
        "epochs=100",
        "log_every=50",
        "val_every=50",
        "callbacks.model_checkpoint.every_n_epochs=50",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(
        [str(BIN / "deepbasics-train"), *args], cwd=tmp_path, env=env, check=True, capture_output=True,
        preexec_fn=lambda: os.umask(umask),
    )  # fmt: skip
    (run,) = run_dirs(tmp_path, "blobs_mlp")
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"metrics.json", "model.pt", "last.ckpt", "fit.png"} <= {p.name for p in files}
    wrong = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != mode}
    assert not wrong, f"expected {oct(mode)} under umask {oct(umask)}"


# The tutorials' classes as the tutorials print them: their reload code must take our model.pt.
class TutorialNeuralNet(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear_1 = nn.Linear(input_size, hidden_size)
        self.relu = torch.nn.ReLU()
        self.linear_2 = nn.Linear(hidden_size, 1)
        self.sigmoid = torch.nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.linear_2(self.relu(self.linear_1(x))))


class TutorialLogistic(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.linear(x))


class TutorialLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize(
    "experiment, tutorial, inputs",
    [
        ("blobs_mlp", lambda: TutorialNeuralNet(2, 5), [[1.0, 1.0], [1.0, -1.0]]),
        ("logistic_diabetes", TutorialLogistic, [[0.1] * 8, [-0.5] * 8]),
        ("linear_scores", TutorialLinear, [[2.0], [5.0]]),
    ],
)
def test_the_tutorials_reload_code_takes_model_pt(tmp_path, diabetes_csv, experiment, tutorial, inputs):
    from hydra.utils import instantiate

    from conftest import compose_experiment
    from deepbasics.models.lightning_modules import predictions
    from deepbasics.run.training import train

    short = ["epochs=20", "log_every=10", "val_every=10", "callbacks.model_checkpoint.every_n_epochs=10"]
    cfg = compose_experiment(experiment, *short, run_dir=tmp_path / "run")
    train(cfg)
    new_model = tutorial()
    new_model.load_state_dict(torch.load(tmp_path / "run" / "model.pt"))  # the tutorials' own line, strict
    spec = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["net"]
    ours = instantiate(spec)
    ours.load_state_dict(torch.load(tmp_path / "run" / "model.pt"))
    x = torch.tensor(inputs)
    with torch.no_grad():
        torch.testing.assert_close(new_model(x), predictions(ours(x), cfg.model._target_.endswith("Classifier")))


def test_minibatch_runs_resume_exactly_after_a_kill_mid_run(tmp_path):
    """The batch order is drawn from (seed, epoch): a resumed run repeats the epochs it lost exactly."""
    from conftest import compose_train
    from deepbasics.run.training import train

    recipe = [
        *RECIPE,
        "data.batch_size=16",
        "epochs=120",
        "log_every=10",
        "val_every=20",
        "callbacks.model_checkpoint.every_n_epochs=20",
    ]
    train(compose_train(*recipe, run_dir=tmp_path / "whole"))
    run = tmp_path / "killed"
    assert _killed_in_a_child("53", *recipe, run_dir=run) == signal.SIGKILL
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["deepbasics"]["epochs"] == 40 and saved["global_step"] == 40 * 5  # 80 rows in batches of 16
    train(compose_train(*recipe, f"resume={run}", run_dir=run))
    _same_run(tmp_path / "whole", run)


@pytest.mark.parametrize("scheduler", ["step", "plateau"])
def test_a_learning_rate_schedule_resumes_exactly(tmp_path, scheduler):
    """The scheduler's state travels in the checkpoint: killed and resumed, the run ends where it would."""
    from conftest import compose_train
    from deepbasics.run.training import train

    recipe = [*RECIPE, f"model/scheduler={scheduler}"]
    recipe += (
        ["model.scheduler.step_size=70"]
        if scheduler == "step"
        else ["model.scheduler.threshold=0.2", "model.scheduler.patience=5"]
    )
    train(compose_train(*recipe, run_dir=tmp_path / "whole"))
    run = tmp_path / "killed"
    assert _killed_in_a_child("170", *recipe, run_dir=run) == signal.SIGKILL
    train(compose_train(*recipe, f"resume={run}", run_dir=run))
    _same_run(tmp_path / "whole", run)
    lr = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]["param_groups"]
    assert lr[0]["lr"] < 0.01  # the schedule did lower it


def test_callbacks_early_stopping_survives_a_kill_and_resume(tmp_path):
    """The resumed run replays the restored epoch's end before any validation: the stopping check waits
    for a fresh one, and the run stops where the uninterrupted one did."""
    from conftest import compose_train
    from deepbasics.run.training import train

    recipe = [
        "experiment=blobs_mlp", "epochs=3000", "log_every=100", "val_every=100",
        "callbacks.model_checkpoint.every_n_epochs=100",
        "callbacks=early_stopping", "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=0.01",
    ]  # fmt: skip
    train(compose_train(*recipe, run_dir=tmp_path / "whole"))
    run = tmp_path / "killed"
    assert _killed_in_a_child("750", *recipe, run_dir=run) == signal.SIGKILL
    train(compose_train(*recipe, f"resume={run}", run_dir=run))
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(run)
    assert whole["status"] == resumed["status"] == "stopped_early"
    assert resumed["stopped"]["epoch"] == whole["stopped"]["epoch"] > 750
    a, b = torch.load(tmp_path / "whole" / "model.pt"), torch.load(run / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
