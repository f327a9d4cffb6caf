"""A killed sweep finishes with one command, exactly as if it had never stopped: real processes killed with
SIGKILL at random points (during the report too), then `resume=auto` until done; a mismatched resume, a
second resume of the same sweep and a plain re-run into a used sweep directory are refused in one line."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import BIN, read_metrics, run_in_this_process

GRID = ["-m", "experiment=blobs_mlp", "epochs=200", "log_every=50", "val_every=50",
    "callbacks.model_checkpoint.every_n_epochs=50",
        "model.optimizer.lr=0.03,0.1,0.3", "seed=1,2"]  # fmt: skip


def jobs_of(sweep: Path) -> list[Path]:
    return sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))


def sweeps(cwd: Path) -> list[Path]:
    root = cwd / "outputs" / "multiruns" / "blobs_mlp"
    return sorted(root.iterdir()) if root.is_dir() else []


def killed_when(args: list[str], cwd: Path, ready, fork: bool = True) -> int:
    """`deepbasics-train <args>` in a real process, SIGKILLed once ``ready()`` holds, with every process it
    started (a launcher's workers too, as a cluster kills a job); the signal that ended it, or 0. With
    ``fork`` the process is this one forked, running the console script's entry point as a new process runs
    it, so it does not pay for Python, torch and Lightning to start again (not for joblib's launcher, whose
    pool of workers this process may hold already)."""
    if not fork:
        proc = subprocess.Popen([str(BIN / "deepbasics-train"), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        code = proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return -code if code < 0 else 0
    pid = os.fork()
    if pid == 0:  # the child: a session of its own (its launcher's workers die with it), never back in pytest
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.chdir(cwd)
            sys.argv = ["deepbasics-train", *args]
            from deepbasics.cli.commands import train

            train()
        finally:
            os._exit(0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        if ready():
            os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    else:
        return 0  # it ended before
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(ProcessLookupError):  # the workers of a launcher, if it ended before
        os.killpg(pid, signal.SIGKILL)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def curve(job: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(job), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def assert_same_sweep(reference: Path, resumed: Path) -> None:
    ours, theirs = jobs_of(resumed), jobs_of(reference)
    assert [j.name for j in ours] == [j.name for j in theirs]
    for mine, yours in zip(ours, theirs, strict=True):
        a, b = read_metrics(mine), read_metrics(yours)
        for key in ("status", "epochs", "monitor", "train", "val", "test"):
            assert a[key] == b[key], (mine.name, key)
        for name in ("model.pt", "checkpoints/last.ckpt"):
            sa, sb = torch.load(mine / name, weights_only=True), torch.load(yours / name, weights_only=True)
            sa, sb = sa.get("state_dict", sa), sb.get("state_dict", sb)
            assert all(torch.equal(sa[k], sb[k]) for k in sb), (mine.name, name)
        assert sorted(p.name for p in (mine / "checkpoints").iterdir()) == sorted(
            p.name for p in (yours / "checkpoints").iterdir()
        ), "no -v1 files, no leftovers"
        for tag in ("train/loss", "val/loss"):
            assert curve(mine, tag) == curve(yours, tag), (mine.name, tag)  # from epoch 0, no doubled points


SMALL = [*GRID[:-2], "model.optimizer.lr=0.3", "seed=1,2"]
STACKED = ["hydra/launcher=vectorized", "hydra.launcher.group_size=3"]
ON_TASKS = ["hydra/launcher=vectorized_slurm", "hydra.launcher.submitit.cluster=local"]
# launcher -> (its options, the grid, kills while jobs train, a kill while the report is written, forked,
# the options of the uninterrupted sweep). A job of the parallel or SLURM launcher is the basic launcher's
# job in another process, so their reference is the basic launcher's sweep (which does not start a process
# per job); a stacked group computes in its own way and is compared to the same groups stacked here.
LAUNCHERS = {
    "basic": ([], GRID, 2, True, True, []),
    # two stacked groups of three, trained side by side in processes of their own (where there are two cores)
    "vectorized": (STACKED, GRID, 2, False, True, STACKED),
    "parallel": (["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], SMALL, 1, False, False, []),
    "slurm": (["hydra/launcher=submitit_local"], SMALL, 1, False, True, []),
    # a group a task of submitit's local executor (a process, as SLURM's would be)
    "vectorized_slurm": (ON_TASKS, SMALL, 1, False, True, STACKED),
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_sweep_killed_anywhere_finishes_with_resume_auto(tmp_path, launcher, monkeypatch, capfd):
    """Under every launcher (SLURM's through submitit's local executor): the jobs of a killed sweep end as
    those of the same sweep never stopped, bit for bit (a stacked group is stacked again, from its jobs'
    checkpoints). The uninterrupted sweep runs in this process, through the same entry point."""
    options, grid, kills, report, fork, whole = LAUNCHERS[launcher]
    GRID_ = [*grid, *options]
    reference = tmp_path / "whole"
    reference.mkdir()
    whole = [*grid, *whole]
    assert run_in_this_process("deepbasics-train", whole, reference, monkeypatch, capfd).returncode == 0
    cwd = tmp_path / "killed"
    cwd.mkdir()
    rng = random.Random(5)

    seen: dict[Path, int] = {}
    written = [0]

    def checkpoints() -> int:
        """last.ckpt writes seen so far (each job writes one every 50 of its 200 epochs: 24 in all)."""
        for path in cwd.glob("outputs/multiruns/*/*/*/checkpoints/last.ckpt"):
            mtime = path.stat().st_mtime_ns
            if seen.get(path) != mtime:
                seen[path] = mtime
                written[0] += 1
        return written[0]

    # killed while jobs train (after 1-4, then 2-6 more checkpoints), then while it writes its report
    first = rng.randint(1, 3)
    assert killed_when(GRID_, cwd, lambda: checkpoints() >= first, fork) == signal.SIGKILL
    (sweep,) = sweeps(cwd)

    # a dry run says what the resume would do, and does nothing
    def files() -> list[tuple[str, int]]:
        return sorted((str(p), p.stat().st_mtime_ns) for p in sweep.rglob("*") if p.name != ".lock")

    before = files()
    plan = run_in_this_process("deepbasics-train", [*GRID_, "resume=auto", "dry_run=true"], cwd, monkeypatch, capfd)
    assert plan.returncode == 0 and files() == before, plan.stderr
    jobs = [line.split(" ", 1)[1] for line in plan.stdout.splitlines() if line[:1] == "#" and "on its own" not in line]
    planned = dict(line.split(": ", 1) for line in jobs)
    names = [j.name for j in jobs_of(sweeps(reference)[0])]
    assert list(planned)[: len(names)] == names, plan.stdout
    for name in names:
        resumable = (sweep / name / "checkpoints" / "last.ckpt").exists()
        assert planned[name].startswith("to resume from epoch") == resumable, (name, planned[name])
    if launcher == "vectorized":
        assert "stacked: #0, #1, #2\nstacked: #3, #4, #5" in plan.stdout
    for _ in range(kills - 1):
        target = checkpoints() + rng.randint(2, 6)
        assert killed_when([*GRID_, "resume=auto"], cwd, lambda t=target: checkpoints() >= t, fork) == signal.SIGKILL
    if report:
        killed_when([*GRID_, "resume=auto"], cwd, lambda: (sweep / "summary.csv").exists())
    done = run_in_this_process("deepbasics-train", [*GRID_, "resume=auto"], cwd, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert sweeps(cwd) == [sweep], "every resume finished the same sweep, in its directory"
    if launcher == "vectorized_slurm":  # the group a task, killed, then its resume's
        assert [len(list(sweep.glob(f".submitit/*/*_{end}.pkl"))) for end in ("submitted", "result")] == [2, 1]
    assert_same_sweep(sweeps(reference)[0], sweep)
    assert (sweep / "summary.md").read_text().count("| completed |") == len(jobs_of(sweep))


def test_a_resume_of_another_sweep_and_a_second_writer_are_refused(tmp_path, monkeypatch, capfd):
    import sys

    short = ["-m", "experiment=linear_scores", "epochs=20", "log_every=10", "val_every=10",
        "callbacks.model_checkpoint.every_n_epochs=10",
             "seed=1,2"]  # fmt: skip
    assert run_in_this_process("deepbasics-train", short, tmp_path, monkeypatch, capfd).returncode == 0
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "linear_scores").iterdir()

    def files() -> list[tuple[str, int]]:
        return sorted((str(p), p.stat().st_mtime_ns) for p in sweep.rglob("*") if p.is_file() and p.name != ".lock")

    before = files()

    other = run_in_this_process(
        "deepbasics-train", [*short[:-1], "seed=1,3", "resume=auto"], tmp_path, monkeypatch, capfd
    )
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "is another sweep (it ran seed=1,2 where this command has seed=1,3)" in other.stderr

    again = run_in_this_process("deepbasics-train", [*short, f"hydra.sweep.dir={sweep}"], tmp_path, monkeypatch, capfd)
    assert again.returncode == 2
    assert f"{sweep} holds a sweep already; finish it with the same command and resume=auto" in again.stderr

    holder = subprocess.Popen(  # another process finishing this sweep holds its lock
        [sys.executable, "-c", f"from deepbasics.files import lock_run_dir; lock_run_dir({str(sweep)!r});"
         " print('held', flush=True); input()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = run_in_this_process("deepbasics-train", [*short, "resume=auto"], tmp_path, monkeypatch, capfd)
    finally:
        holder.communicate("\n")
    assert busy.returncode == 2 and f"{sweep} is in use by process {holder.pid}" in busy.stderr
    assert files() == before, "a refused sweep writes nothing"

    finished = run_in_this_process("deepbasics-train", [*short, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert finished.returncode == 0 and finished.stdout.count("already finished") == 2


@pytest.mark.slow
def test_a_killed_optuna_sweep_continues_toward_n_trials(tmp_path, monkeypatch, capfd):
    """The trials a kill left running are launched again in their own directories (continuing from their
    checkpoints), then new ones until the sweep has n_trials; the study, the sweep and its report agree."""
    import csv

    import optuna

    search = ["hparams_search=linear_scores_optuna", "epochs=200", "log_every=50", "val_every=50",
        "callbacks.model_checkpoint.every_n_epochs=50",
              "model.optimizer.lr=tag(log,interval(0.0001,0.01))", "hydra.sweeper.n_trials=6",
              "hydra.sweeper.n_jobs=2"]  # fmt: skip
    started = lambda: any(tmp_path.glob("outputs/multiruns/*/*/02_*/checkpoints/last.ckpt"))  # noqa: E731
    assert killed_when(search, tmp_path, started) == signal.SIGKILL
    storage = f"sqlite:///{tmp_path}/outputs/optuna.db"
    killed = optuna.load_study(study_name="linear_scores_lr", storage=storage).trials  # as the kill left them
    assert [t.state.name for t in killed] == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]
    done = run_in_this_process("deepbasics-train", [*search, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="linear_scores_lr", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6  # the two killed trials told, four more
    assert [t.params for t in study.trials[:4]] == [t.params for t in killed]
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "linear_scores").iterdir()
    jobs = jobs_of(sweep)
    assert [int(j.name[:2]) for j in jobs] == list(range(6))
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [float(r["value"]) for r in rows] == [t.value for t in study.trials]
    assert [float(r["model.optimizer.lr"]) for r in rows] == [t.params["model.optimizer.lr"] for t in study.trials]


def test_a_damaged_sweep_definition_is_rebuilt_or_named_never_skipped(tmp_path, monkeypatch, capfd):
    short = ["-m", "experiment=linear_scores", "epochs=20", "log_every=10", "val_every=10",
             "callbacks.model_checkpoint.every_n_epochs=10", "seed=1,2"]  # fmt: skip
    assert run_in_this_process("deepbasics-train", short, tmp_path, monkeypatch, capfd).returncode == 0
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "linear_scores").iterdir()
    recorded = sweep / ".sweep" / "definition.yaml"
    intact = recorded.read_text()
    recorded.write_text(intact[: intact.index("overrides:") + 15])  # a copy cut short: YAML that does not parse

    rebuilt = run_in_this_process("deepbasics-train", [*short, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert rebuilt.returncode == 0 and rebuilt.stdout.count("already finished") == 2, rebuilt.stderr
    assert f"note: {recorded} was damaged" in rebuilt.stderr and "Warning" not in rebuilt.stderr
    assert recorded.read_text() == intact

    # Its identity check still holds after the rebuild: another sweep is refused.
    recorded.write_text("experiment: [")
    other = run_in_this_process("deepbasics-train", [*short[:-1], "seed=1,3", "resume=auto"], tmp_path,
                                monkeypatch, capfd)  # fmt: skip
    assert other.returncode == 2 and "is another sweep (it ran seed=1,2" in other.stderr.splitlines()[-1]

    # With nothing to rebuild it from, the command stops in one line that names the file; the lock is released.
    recorded.write_text("experiment: [")
    (sweep / "multirun.yaml").write_text("hydra: {")
    named = run_in_this_process("deepbasics-train", [*short, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert named.returncode == 2 and named.stderr.count("\n") == 1, named.stderr
    assert f"error: {recorded} is damaged (" in named.stderr and "restore the file from a copy" in named.stderr
    again = run_in_this_process("deepbasics-train", [*short, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert again.returncode == 2 and "is damaged" in again.stderr  # refused for the file, not for a lock left held
