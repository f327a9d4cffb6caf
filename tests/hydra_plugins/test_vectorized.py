"""hydra/launcher=vectorized against the basic launcher on the same sweeps: every job's files, numbers,
checkpoints (resumable alone), events and .hydra/ files; a job that diverges fails alone; jobs that cannot
share a model run on their own and say so; Optuna batches train stacked."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import BIN, RECIPES, compose_train, read_metrics, run_in_this_process

GRID = ["experiment=blobs_mlp", "epochs=100", "log_every=25", "val_every=50",
    "callbacks.model_checkpoint.every_n_epochs=50",
        "model.optimizer.lr=0.03,0.3", "seed=1,2"]  # fmt: skip
VECTORIZED = "hydra/launcher=vectorized"


def sweep(args: list[str], root: Path, monkeypatch, capfd):
    """Run `deepbasics-train -m <args>` in root; (exit code, output, the sweep's job directories)."""
    root.mkdir(parents=True, exist_ok=True)
    proc = run_in_this_process("deepbasics-train", ["-m", *args], root, monkeypatch, capfd)
    sweeps = sorted((root / "outputs" / "multiruns").glob("*/*"))
    jobs = sorted(p for p in sweeps[-1].iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    return proc.returncode, proc.stdout + proc.stderr, jobs


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """The same grid under the basic launcher and under the vectorized one, in separate directories."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        capfd = _NoCapture()
        basic = sweep(GRID, tmp_path_factory.mktemp("basic"), monkeypatch, capfd)
        vectorized = sweep([*GRID, VECTORIZED], tmp_path_factory.mktemp("vectorized"), monkeypatch, capfd)
    return basic, vectorized


class _NoCapture:
    def readouterr(self):
        return "", ""


@contextlib.contextmanager
def ctrl_c_at(epoch: int, monkeypatch):
    """Within it, Ctrl-C arrives while a stacked group validates epoch ``epoch``."""
    from deepbasics.models.stacked import StackedModule

    validate = StackedModule.validation_step

    def interrupted(self, batch, batch_idx):
        validate(self, batch, batch_idx)
        if self.current_epoch + 1 == epoch:
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patched:
        patched.setattr(StackedModule, "validation_step", interrupted)
        yield


def files(job: Path) -> list[str]:
    names = (p.relative_to(job).as_posix() for p in job.rglob("*"))
    return sorted({re.sub(r"events\.out\.tfevents\..*", "events", n) for n in names})  # one file or several


def without_paths(value, job: Path):
    """``value`` with the job's directory (and its sweep's) written as placeholders."""
    if isinstance(value, dict):
        return {k.replace(str(job), "<job>"): without_paths(v, job) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(without_paths(v, job) for v in value)
    if isinstance(value, str):
        return value.replace(str(job), "<job>").replace(str(job.parent), "<sweep>")
    return value


def close(a, b, job: Path, where: str = "") -> None:
    """Equal structure and strings (paths aside), tensors and floats equal within float32 rounding."""
    if isinstance(a, dict):
        assert set(without_paths(dict.fromkeys(a), job)) == set(without_paths(dict.fromkeys(b), _twin[0])), where
        for key in a:
            other = key if key in b else key.replace(str(job), str(_twin[0]))
            close(a[key], b[other], job, f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, job, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=where)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-7), where
    else:
        assert without_paths(a, job) == without_paths(b, _twin[0]), where


_twin: list[Path] = [Path()]  # the other launcher's job directory, while comparing a pair


def test_every_job_gets_what_a_basic_launcher_job_gets(grids):
    (basic_code, _, basic), (code, _, vectorized) = grids
    assert code == basic_code == 0
    assert len(basic) == len(vectorized) == 4
    assert [j.name for j in basic] == [j.name for j in vectorized]
    for ours, theirs in zip(vectorized, basic, strict=True):
        _twin[0] = theirs
        assert files(ours) == files(theirs)
        close(read_metrics(ours), read_metrics(theirs), ours, "metrics.json")
        close(torch.load(ours / "model.pt"), torch.load(theirs / "model.pt"), ours, "model.pt")
        for checkpoint in sorted((theirs / "checkpoints").iterdir()):
            mine = torch.load(ours / "checkpoints" / checkpoint.name, weights_only=False)
            close(mine, torch.load(checkpoint, weights_only=False), ours, checkpoint.name)
        hparams = [yaml.safe_load((j / "hparams.yaml").read_text()) for j in (ours, theirs)]
        assert hparams[0] == hparams[1] and hparams[0]["optimizer.lr"] in (0.03, 0.3)
        # one axis policy under both launchers: the same job draws the same figures (float32 rounding
        # may move a pixel's shade, not an axis)
        for name in ("fit.png", "loss.png"):
            mine, yours = (np.asarray(Image.open(j / "figures" / name)).astype(int) for j in (ours, theirs))
            assert mine.shape == yours.shape and (mine != yours).any(axis=-1).mean() < 1e-3, name
        for name in ("config.yaml", "overrides.yaml"):
            assert without_paths((ours / ".hydra" / name).read_text(), ours) == without_paths(
                (theirs / ".hydra" / name).read_text(), theirs
            )
        hydra_ours, hydra_theirs = (yaml.safe_load((j / ".hydra" / "hydra.yaml").read_text()) for j in (ours, theirs))
        for node in ("launcher", "sweep", "runtime"):  # the launcher chosen, and where and when each ran
            hydra_ours["hydra"].pop(node), hydra_theirs["hydra"].pop(node)
        hydra_ours["hydra"]["overrides"]["hydra"].remove(VECTORIZED)
        assert hydra_ours == hydra_theirs
        events = [EventAccumulator(str(j), size_guidance={"scalars": 0}) for j in (ours, theirs)]
        for e in events:
            e.Reload()
        assert sorted(events[0].Tags()["scalars"]) == sorted(events[1].Tags()["scalars"])
        assert events[0].Tags()["images"] == events[1].Tags()["images"] == ["visual/fit"]
        for tag in events[1].Tags()["scalars"]:
            mine, yours = (sorted((p.step, p.value) for p in e.Scalars(tag)) for e in events)
            assert [s for s, _ in mine] == [s for s, _ in yours], tag
            assert [v for _, v in mine] == pytest.approx([v for _, v in yours], rel=1e-4, abs=1e-7), tag
    reports = [list(csv.DictReader((j[0].parent / "summary.csv").open())) for j in (vectorized, basic)]
    assert len(reports[0]) == len(reports[1]) == 4
    for ours, theirs in zip(*reports, strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            mine, yours = _number(ours[key]), _number(theirs[key])
            if isinstance(yours, float):
                assert mine == pytest.approx(yours, rel=1e-4), key
            elif key != "run_dir":
                assert mine == yours, key


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def test_groups_are_sized_to_memory_and_split_when_it_runs_out(grids, tmp_path, monkeypatch, capfd):
    """Room for three jobs makes a group of 3 first; it runs out of memory in its first step, and the sweep trains in
    groups of 2: every job ends as in the one group of the unsplit sweep."""
    from deepbasics.models.stacked import StackedModule
    from deepbasics.run import memory

    room = 3 * _blobs_job_bytes() / 0.8 + 1
    monkeypatch.setattr(memory, "room", lambda gpu: (room, "RLIMIT_AS (ulimit -v)"))
    probe, sizes = StackedModule.probe, []

    def short_of_memory(self, rows, device):
        sizes.append(len(self.jobs))
        if len(self.jobs) == 3:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return probe(self, rows, device)

    monkeypatch.setattr(StackedModule, "probe", short_of_memory)
    code, output, jobs = sweep([*GRID, VECTORIZED], tmp_path, monkeypatch, capfd)
    assert code == 0, output
    assert "#0-#3: 4 jobs need about" in output and "RLIMIT_AS (ulimit -v) leaves" in output
    assert "training 4 jobs stacked: #0-#3" in output and ": 3 of them first" in output, output
    assert "#0-#2: 3 jobs ran out of memory" in output
    assert "trying groups of 2" in output and sizes == [3, 2, 2]
    for ours, theirs in zip(jobs, grids[1][2], strict=True):
        _twin[0] = theirs
        close(read_metrics(ours), read_metrics(theirs), ours, "metrics.json")
        close(torch.load(ours / "model.pt"), torch.load(theirs / "model.pt"), ours, "model.pt")
        assert files(ours) == files(theirs)


def _blobs_job_bytes() -> int:
    """What one job of GRID adds to a group: its training step, and its own data (the jobs' seeds differ)."""
    from deepbasics.run import build, memory

    cfg = compose_train("experiment=blobs_mlp", "seed=1")
    datamodule = build.build_datamodule(cfg.data)
    module = build.build_model(cfg.model, datamodule)
    data = sum(t.numel() * t.element_size() for split in datamodule.splits.values() for t in split)
    return memory.job_bytes(module, *datamodule.splits["train"]) + data + memory.WRITER_STACK


def test_save_last_link_and_the_checkpoint_hooks_of_a_group(tmp_path, monkeypatch, capfd):
    """callbacks.model_checkpoint.save_last=link behaves as under the basic launcher, and a group calls its
    jobs' ModelCheckpoint only where it can save, never at every step."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    calls = {"on_train_batch_end": 0, "on_train_epoch_end": 0}
    for hook in calls:
        original = getattr(ModelCheckpoint, hook)

        def counted(self, *args, _hook=hook, _original=original, **kwargs):
            calls[_hook] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ModelCheckpoint, hook, counted)
    args = [*GRID, "callbacks.model_checkpoint.save_last=link"]
    links = {}
    for launcher in ([], [VECTORIZED]):
        before = dict(calls)
        code, output, jobs = sweep([*args, *launcher], tmp_path / str(len(launcher)), monkeypatch, capfd)
        assert code == 0, output
        files = [p for j in jobs for p in sorted((j / "checkpoints").iterdir())]
        links[bool(launcher)] = [(p.parent.parent.name, p.name, p.is_symlink(), p.resolve().name) for p in files]
        steps, epochs = (calls[h] - before[h] for h in calls)
        # 4 jobs x 100 epochs, a checkpoint every 50: a run of its own calls ModelCheckpoint at every step and
        # epoch end; a group calls each job's at the 2 epoch ends that save
        assert (steps, epochs) == ((0, 4 * 2) if launcher else (4 * 100, 4 * 100)), launcher
    assert links[True] == links[False]
    assert any(linked for _, name, linked, _ in links[True] if name == "last.ckpt"), "last.ckpt links to a checkpoint"


def test_a_stacked_job_resumes_alone_under_the_basic_launcher(grids, tmp_path, monkeypatch, capfd):
    (_, _, basic), (_, _, vectorized) = grids
    for job in (basic[2], vectorized[2]):
        proc = run_in_this_process(
            "deepbasics-train", ["experiment=blobs_mlp", f"resume='{job}'", "epochs=150"], tmp_path, monkeypatch, capfd
        )
        assert proc.returncode == 0, proc.stderr
        assert read_metrics(job)["epochs"] == 150
    _twin[0] = basic[2]
    close(torch.load(vectorized[2] / "model.pt"), torch.load(basic[2] / "model.pt"), vectorized[2], "model.pt")
    close(read_metrics(vectorized[2])["test"], read_metrics(basic[2])["test"], vectorized[2], "test")


def test_a_diverging_job_fails_alone(tmp_path, monkeypatch, capfd):
    grid = ["experiment=linear_study_hours", "model.optimizer.lr=0.01,0.1"]
    results = []
    for launcher in ([], [VECTORIZED]):
        root = tmp_path / ("vectorized" if launcher else "basic")
        root.mkdir()
        code, output, jobs = sweep([*grid, *launcher], root, monkeypatch, capfd)
        results.append((code, [read_metrics(j) for j in jobs], jobs))
    (basic_code, basic, basic_jobs), (code, ours, jobs) = results
    assert code == basic_code
    assert [m["status"] for m in ours] == [m["status"] for m in basic] == ["completed", "failed"]
    assert ours[1]["failed_at_epoch"] == basic[1]["failed_at_epoch"]
    assert without_paths(ours[1]["error"], jobs[1]) == without_paths(basic[1]["error"], basic_jobs[1])
    assert "the loss became" in ours[1]["error"]
    _twin[0] = basic_jobs[0]
    close(ours[0], basic[0], jobs[0], "the job that converged")
    assert files(jobs[1]) == files(basic_jobs[1])


def test_deterministic_recipes_keep_the_tutorial_numbers(tmp_path, monkeypatch, capfd):
    code, output, jobs = sweep(["experiment=linear_study_hours", "seed=1,2", VECTORIZED], tmp_path, monkeypatch, capfd)
    assert code == 0 and "training 2 jobs stacked" in output
    W, b, _ = RECIPES["linear_study_hours"]()
    for job in jobs:
        state = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        torch.testing.assert_close(state["net.linear.weight"], W.T, rtol=0, atol=1e-5)
        torch.testing.assert_close(state["net.linear.bias"], b, rtol=0, atol=1e-5)


ALONE = {  # each schedule changes the learning rate within 100 epochs; 80 training rows in batches of 24: 4 steps
    # a scheduler torch steps by epoch (cosine's and the others' path too), its checkpoints kept by train/loss (the
    # point of their own epoch), and a plateau on each job's loss
    "step": ["model/scheduler=step", "model.scheduler.step_size=30", "monitor.metric=train/loss"],
    "mini-batches-plateau": [
        "data.batch_size=24",
        "model/scheduler=plateau",
        "model.scheduler.patience=3",
        "model.scheduler.threshold=0.5",
    ],
}


@pytest.mark.parametrize("case", ALONE)
def test_scheduled_and_mini_batch_jobs_train_stacked_as_each_alone(case, tmp_path, monkeypatch, capfd):
    """Each job's learning-rate schedule and its own shuffle of mini-batches, as alone: its weights, metrics and
    checkpoints (the scheduler's state and the optimizer's learning rate in them) as under the basic launcher."""
    args = [*GRID[:-1], "seed=1", *ALONE[case]]
    _, _, basic = sweep(args, tmp_path / "basic", monkeypatch, capfd)
    code, output, jobs = sweep([*args, VECTORIZED], tmp_path / "vectorized", monkeypatch, capfd)
    assert code == 0 and "training 2 jobs stacked" in output, output
    for ours, theirs in zip(jobs, basic, strict=True):
        _twin[0] = theirs
        close(torch.load(ours / "model.pt"), torch.load(theirs / "model.pt"), ours, "model.pt")
        close(read_metrics(ours)["test"], read_metrics(theirs)["test"], ours, "test")
        for checkpoint in sorted((theirs / "checkpoints").iterdir()):
            mine = torch.load(ours / "checkpoints" / checkpoint.name, weights_only=False)
            close(mine, torch.load(checkpoint, weights_only=False), ours, checkpoint.name)
        events = [EventAccumulator(str(j)).Reload() for j in (ours, theirs)]
        for tag in ("train/loss", "val/loss"):  # at the steps a run's loggers have them (4 a mini-batch epoch)
            mine, yours = ([(p.step, p.value) for p in e.Scalars(tag)] for e in events)
            assert [s for s, _ in mine] == [s for s, _ in yours], tag
            assert [v for _, v in mine] == pytest.approx([v for _, v in yours], rel=1e-4, abs=1e-7), tag
        last = torch.load(ours / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == 100 * (4 if "batch" in case else 1)
        lr = last["optimizer_states"][0]["param_groups"][0]["lr"]
        assert len(last["lr_schedulers"]) == ("scheduler" in str(ALONE[case]))
        assert (lr < last["hyper_parameters"]["optimizer"]["lr"]) == ("scheduler" in str(ALONE[case])), lr
        if "scheduler" in str(ALONE[case]):  # the rate at each epoch's start, as Lightning's LearningRateMonitor
            mine, yours = (
                [(p.step, p.value) for p in EventAccumulator(str(j)).Reload().Scalars("lr-SGD")] for j in (ours, theirs)
            )
            assert len(mine) == 100 and mine == yours  # float32 in the events: the same rate, rounded alike


def test_each_job_stops_early_as_it_would_alone(tmp_path, monkeypatch, capfd):
    """Each job's EarlyStopping on its own metrics: one stops at epoch 30, one at 150, one trains its 200 epochs, in
    one group. Each ends where it ends alone: status, stop, weights, every checkpoint (its EarlyStopping state and its
    stop in them), and its curves."""
    args = ["experiment=blobs_mlp", "epochs=200", "log_every=10", "val_every=10", "callbacks=early_stopping",
            "callbacks.model_checkpoint.every_n_epochs=10", "callbacks.early_stopping.patience=2",
            "callbacks.early_stopping.min_delta=0.02", "model.optimizer.lr=0.03,0.1,0.3", "seed=1"]  # fmt: skip
    _, _, basic = sweep(args, tmp_path / "basic", monkeypatch, capfd)
    code, output, jobs = sweep([*args, VECTORIZED], tmp_path / "vectorized", monkeypatch, capfd)
    assert code == 0 and "training 3 jobs stacked" in output, output
    ends = [(read_metrics(j)["status"], read_metrics(j)["epochs"]) for j in jobs]
    assert ends == [("stopped_early", 30), ("completed", 200), ("stopped_early", 150)], ends
    for ours, theirs in zip(jobs, basic, strict=True):
        _twin[0] = theirs
        close(read_metrics(ours), read_metrics(theirs), ours, "metrics.json")
        close(torch.load(ours / "model.pt"), torch.load(theirs / "model.pt"), ours, "model.pt")
        assert sorted(p.name for p in (ours / "checkpoints").iterdir()) == sorted(
            p.name for p in (theirs / "checkpoints").iterdir()
        )
        for checkpoint in sorted((theirs / "checkpoints").iterdir()):
            mine = torch.load(ours / "checkpoints" / checkpoint.name, weights_only=False)
            close(mine, torch.load(checkpoint, weights_only=False), ours, checkpoint.name)
        events = [EventAccumulator(str(j)).Reload() for j in (ours, theirs)]
        for tag in ("train/loss", "val/loss"):
            assert [p.step for p in events[0].Scalars(tag)] == [p.step for p in events[1].Scalars(tag)], tag
    # Ctrl-C at epoch 100, when one job has stopped (its end not written yet) and two train on; resume=auto ends all
    with ctrl_c_at(100, monkeypatch):
        code, output, stopped = sweep([*args, VECTORIZED], tmp_path / "stopped", monkeypatch, capfd)
    assert code == 130 and [read_metrics(j)["epochs"] for j in stopped] == [30, 100, 100], output
    assert "continue with" in read_metrics(stopped[0])["error"]
    code, output, stopped = sweep([*args, VECTORIZED, "resume=auto"], tmp_path / "stopped", monkeypatch, capfd)
    assert code == 0 and "#0 runs on its own: it stopped early" in output, output
    for ours, theirs in zip(stopped, basic, strict=True):
        _twin[0] = theirs
        close(read_metrics(ours), read_metrics(theirs), ours, "metrics.json")
        close(torch.load(ours / "model.pt"), torch.load(theirs / "model.pt"), ours, "model.pt")


def test_a_monitor_the_jobs_do_not_log_is_refused_before_training(tmp_path, monkeypatch, capfd):
    code, output, jobs = sweep(["experiment=blobs_mlp", "monitor.metric=train/nope", "seed=1,2", VECTORIZED], tmp_path,
                               monkeypatch, capfd)  # fmt: skip
    assert code == 1 and len(jobs) == 2, output
    for job in jobs:
        error = read_metrics(job)["error"]
        assert error.startswith("monitor.metric=train/nope: it is not a metric this run logs; pick one of"), error
        assert not (job / "checkpoints").exists()


def test_a_scheduled_mini_batch_sweep_stopped_by_ctrl_c_resumes_stacked(tmp_path, monkeypatch, capfd):
    """Each job's schedule and shuffle go on from its checkpoint, as in the same sweep never stopped."""
    args = [*GRID[:-1], "seed=1", *ALONE["step"], "data.batch_size=24", VECTORIZED]
    _, _, whole = sweep(args, tmp_path / "whole", monkeypatch, capfd)
    with ctrl_c_at(50, monkeypatch):
        code, output, jobs = sweep(args, tmp_path / "stopped", monkeypatch, capfd)
    assert code == 130 and all(read_metrics(j)["epochs"] == 50 for j in jobs), output
    code, output, jobs = sweep([*args, "resume=auto"], tmp_path / "stopped", monkeypatch, capfd)
    assert code == 0 and "training 2 jobs stacked" in output, output
    for ours, theirs in zip(jobs, whole, strict=True):
        _twin[0] = theirs
        close(torch.load(ours / "model.pt"), torch.load(theirs / "model.pt"), ours, "model.pt")
        mine, yours = (torch.load(j / "checkpoints" / "last.ckpt", weights_only=True) for j in (ours, theirs))
        close(mine["lr_schedulers"], yours["lr_schedulers"], ours, "lr_schedulers")
        close(mine["optimizer_states"], yours["optimizer_states"], ours, "optimizer_states")


def test_groups_by_optimizer_kind_side_by_side_in_processes(tmp_path, monkeypatch, capfd):
    """Four groups (two kinds, group_size 2): with two cores, two processes forked from the sweep's train them."""
    import os

    from deepbasics.run import group

    trained_by, train_group = tmp_path / "pids", group.train_group

    def recorded(*args):
        with trained_by.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return train_group(*args)

    monkeypatch.setattr(group, "train_group", recorded)
    args = [
        "experiment=blobs_mlp",
        "epochs=20",
        "log_every=10",
        "val_every=10",
        "callbacks.model_checkpoint.every_n_epochs=10",
        "model.optimizer._target_=torch.optim.SGD,torch.optim.Adam",
        "seed=1,2,3",
        VECTORIZED,
        "hydra.launcher.group_size=2",
    ]
    code, output, jobs = sweep(args, tmp_path, monkeypatch, capfd)
    assert code == 0
    # sgd and adam: two groups, each of at most group_size jobs
    assert output.count("training 2 jobs stacked") == 2 and output.count("training 1 job stacked") == 2
    assert [read_metrics(j)["status"] for j in jobs] == ["completed"] * 6
    pids = trained_by.read_text().split()
    assert len(pids) == 4
    if len(os.sched_getaffinity(0)) >= 2:
        assert len(set(pids)) == 2 and str(os.getpid()) not in pids


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="groups train side by side only with two cores or more")
def test_groups_of_a_sweep_killed_alone_save_and_stop_then_resume(tmp_path, monkeypatch, capfd):
    """kill -9 of the sweep's process alone, not its process group: the processes training its two groups notice,
    save at an epoch end and stop (no orphan trains on, holding the jobs' directories); resume=auto finishes all."""
    args = ["-m", "experiment=blobs_mlp", "epochs=1000", "log_every=100", "val_every=100",
            "callbacks.model_checkpoint.every_n_epochs=100", "model.optimizer.lr=0.03,0.3", "seed=1,2", VECTORIZED,
            "hydra.launcher.group_size=2"]  # fmt: skip
    proc = subprocess.Popen([str(BIN / "deepbasics-train"), *args], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("outputs/multiruns/*/*/*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    while time.monotonic() < deadline:  # its workers, in its process group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the workers of a killed sweep are still running")
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "blobs_mlp").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.name[:2].isdigit())
    assert len(jobs) == 4 and all(read_metrics(j)["status"] == "interrupted" for j in jobs)
    assert all("SIGTERM: stopped at epoch" in read_metrics(j)["error"] for j in jobs)
    done = run_in_this_process("deepbasics-train", [*args, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert all(read_metrics(j)["status"] == "completed" and read_metrics(j)["epochs"] == 1000 for j in jobs)


def test_a_bad_value_fails_its_own_jobs_and_large_groups_end_in_workers(tmp_path, monkeypatch, capfd):
    # 16 jobs, 8 of them with a momentum torch refuses; the other 8 are enough for the forked workers
    args = ["experiment=blobs_mlp", "epochs=10", "log_every=5", "val_every=5",
        "callbacks.model_checkpoint.every_n_epochs=5",
            "+model.optimizer.momentum=0.5,-0.5", "seed=range(8)", VECTORIZED]  # fmt: skip
    code, output, jobs = sweep(args, tmp_path, monkeypatch, capfd)
    assert code == 1, output  # as a basic sweep with failed jobs
    assert "training 16 jobs stacked" in output
    for job in jobs:
        metrics = read_metrics(job)
        if "momentum=-0.5" in job.name:
            assert metrics["status"] == "failed" and "momentum" in metrics["error"], metrics
        else:
            assert metrics["status"] == "completed", metrics
            assert (job / "figures" / "fit.png").is_file() and (job / "model.pt").is_file()
        # the .hydra/ files, written by the forked writer, are this job's
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        seed = int(job.name.rsplit("seed=", 1)[1])
        assert f"seed={seed}" in overrides
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["seed"] == seed


@pytest.mark.parametrize(
    "override, reason",
    [
        (
            "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
            "callbacks.lr is not run for stacked",
        ),
        ("resume=auto", "it resumes a run"),
        ("+trainer.min_epochs=5", "trainer.min_epochs or min_steps is set"),  # a stacked job would stop at once
        ("+model.scheduler={_target_: torch.optim.lr_scheduler.OneCycleLR}", "model.scheduler cycles momentum"),
        ("+model.optimizer.differentiable=true", "model.optimizer.differentiable is not applied by the stacked SGD"),
        ("model.optimizer._target_=torch.optim.RMSprop", "model.optimizer is RMSprop; stacked jobs train with SGD"),
        ("data._target_=lightning.pytorch.LightningDataModule", "its data are served through DataLoaders"),
        ("trainer=ddp_cpu", "it trains on several devices"),
    ],
)
def test_a_job_that_cannot_share_a_model_says_why(override, reason):
    from hydra_plugins.deepbasics_vectorized.launcher import group_key

    assert group_key(compose_train("experiment=blobs_mlp"))[0] is None
    assert group_key(compose_train("experiment=blobs_mlp", override))[0].startswith(reason)


def test_optuna_batches_train_stacked(tmp_path, monkeypatch, capfd):
    args = ["hparams_search=linear_scores_optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "epochs=20",
            "log_every=10", "val_every=10", "callbacks.model_checkpoint.every_n_epochs=10", VECTORIZED]  # fmt: skip
    code, output, jobs = sweep(args, tmp_path, monkeypatch, capfd)
    assert code == 0, output
    assert output.count("training 2 jobs stacked") == 2
    results = yaml.safe_load((jobs[0].parent / "optimization_results.yaml").read_text())
    assert results["best_value"] == min(read_metrics(j)["monitor"]["value"] for j in jobs)


def test_sweep_configs_equal_hydras_own(tmp_path):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from deepbasics.config.paths import CONF_DIR
    from hydra_plugins.deepbasics_grid.configs import SweepConfigs

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", [f"paths.output_dir={tmp_path}"], run_mode=RunMode.MULTIRUN)
        configs = SweepConfigs(loader, master)
        for overrides in (
            ["experiment=blobs_mlp", "model.optimizer.lr=0.1", "seed=3"],
            ["experiment=linear_scores", "+model.optimizer.momentum=0.9", "epochs=7"],
            ["model=logistic", "~model.init", "data=toy"],
        ):
            ours, hydras = configs.load(overrides), loader.load_sweep_config(master, overrides)
            assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydras), overrides


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_error_of_the_group_fails_each_job_as_it_would_alone(tmp_path, monkeypatch, capfd):
    args = ["experiment=blobs_mlp", "epochs=10", "log_every=5", "val_every=5",
        "callbacks.model_checkpoint.every_n_epochs=5", "trainer=gpu",
            "seed=1,2", VECTORIZED]  # fmt: skip
    code, output, jobs = sweep(args, tmp_path, monkeypatch, capfd)
    assert code == 1, output
    for job in jobs:
        metrics = read_metrics(job)
        assert metrics["status"] == "failed" and "gpu" in metrics["error"].lower(), metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_a_group_trains_on_the_gpu(tmp_path, monkeypatch, capfd):
    args = ["experiment=blobs_mlp", "epochs=200", "log_every=50", "val_every=100",
        "callbacks.model_checkpoint.every_n_epochs=100",
            "model.optimizer.lr=0.03,0.3", "seed=1,2"]  # fmt: skip
    code, output, gpu = sweep([*args, "trainer=gpu", VECTORIZED], tmp_path / "gpu", monkeypatch, capfd)
    assert code == 0 and "training 4 jobs stacked" in output, output
    _, _, cpu = sweep([*args, VECTORIZED], tmp_path / "cpu", monkeypatch, capfd)
    for ours, theirs in zip(gpu, cpu, strict=True):
        _twin[0] = theirs
        close(torch.load(ours / "model.pt"), torch.load(theirs / "model.pt"), ours, "model.pt")


def test_ctrl_c_stops_the_group_and_each_job_resumes_alone(grids, tmp_path, monkeypatch, capfd):
    with ctrl_c_at(50, monkeypatch):
        code, output, jobs = sweep([*GRID, VECTORIZED], tmp_path, monkeypatch, capfd)
    assert code == 130, output
    for job in jobs:
        metrics = read_metrics(job)
        assert metrics["status"] == "interrupted" and metrics["epochs"] == 50, metrics
        assert "continue with: the same command (with -m) and resume=auto, which finishes the sweep" in metrics["error"]
        assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 50
    proc = run_in_this_process(
        "deepbasics-train", ["experiment=blobs_mlp", f"resume='{jobs[1]}'"], tmp_path, monkeypatch, capfd
    )
    assert proc.returncode == 0, proc.stderr
    (_, _, basic), _ = grids
    _twin[0] = basic[1]
    close(torch.load(jobs[1] / "model.pt"), torch.load(basic[1] / "model.pt"), jobs[1], "model.pt")
    close(read_metrics(jobs[1])["test"], read_metrics(basic[1])["test"], jobs[1], "test")


def test_stacked_jobs_write_every_configured_logger(tmp_path, monkeypatch, capfd):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the runs' own default store
    args = ["experiment=blobs_mlp", "epochs=10", "log_every=5", "val_every=5",
        "callbacks.model_checkpoint.every_n_epochs=5", "logger=many",
            "seed=1,2", VECTORIZED]  # fmt: skip
    code, output, jobs = sweep(args, tmp_path, monkeypatch, capfd)
    assert code == 0 and "training 2 jobs stacked" in output, output
    # set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: monkeypatch takes it away afterwards
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("deepbasics.kind") == "sweep"]
    children = sorted((r for r in runs if r is not parent), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in children] == [j.name for j in jobs]
    assert parent.data.tags["deepbasics.launcher"] == "VectorizedLauncher"
    histories = []
    for run, job in zip(children, jobs, strict=True):
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["deepbasics.launcher"] == "VectorizedLauncher"
        assert run.data.tags["deepbasics.run_dir"] == str(job)
        # the jobs' runs span the group's training, as its points were logged live
        points = client.get_metric_history(run.info.run_id, "train/loss")
        assert run.info.start_time <= min(p.timestamp for p in points) <= max(p.timestamp for p in points)
        assert max(p.timestamp for p in points) <= run.info.end_time
        histories.append(sorted(p.timestamp for p in points))
    assert histories[0][0] <= histories[1][-1] and histories[1][0] <= histories[0][-1]  # trained together
    for job in jobs:
        rows = list(csv.DictReader((job / "csv" / "metrics.csv").open()))
        losses = {int(r["step"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}
        assert sorted(losses) == [5, 10] and losses[10] == pytest.approx(read_metrics(job)["val"]["loss"], rel=1e-5)


def test_job_numbers_read_as_ranges():
    """The runs of consecutive job numbers the launcher's "training N jobs stacked: #0-#3, #5" line is made of."""
    from deepbasics.config.sweep_dir import consecutive

    assert consecutive([0, 1, 2, 3, 5, 7, 8]) == [[0, 1, 2, 3], [5], [7, 8]]
    assert consecutive([4]) == [[4]]


def test_the_hand_written_reference_is_the_same_work(tmp_path, monkeypatch, capfd):
    """scripts/stacked_reference.py, the loop stacked sweeps are measured against, trains what the vectorized
    launcher trains: each of a 10-job grid's nets to float32 rounding (a batched product sums in its order)."""
    import runpy
    import sys

    from conftest import REPO

    grid = ["experiment=blobs_mlp", "epochs=200", "model.optimizer.lr=0.01,0.03,0.1,0.3,1.0", "seed=0,1", VECTORIZED]
    code, output, jobs = sweep(grid, tmp_path, monkeypatch, capfd)
    assert code == 0 and len(jobs) == 10, output
    monkeypatch.setattr(sys, "argv", ["stacked_reference.py", "--jobs", "10", "--epochs", "200", "--out", "ref"])
    runpy.run_path(str(REPO / "scripts" / "stacked_reference.py"), run_name="__main__")
    for k, job in enumerate(jobs):
        ours, reference = (
            torch.load(path / "model.pt", weights_only=True) for path in (job, tmp_path / "ref" / str(k))
        )
        for name, value in ours.items():
            torch.testing.assert_close(reference[name], value, rtol=0, atol=1e-5, msg=f"{job.name} {name}")


DIES_ON_A_TASK = """
import os

from deepbasics.data import BlobsDataModule


class DiesOnATask(BlobsDataModule):
    \"\"\"Blobs whose building kills the process on a task of submitit's local executor (as SLURM kills one).\"\"\"

    def __init__(self, **kwargs):
        if os.environ.get("SUBMITIT_LOCAL_JOB_ID") and kwargs["seed"] == 1:
            os.kill(os.getpid(), 9)
        super().__init__(**kwargs)
"""


@pytest.mark.slow
def test_groups_as_tasks_and_a_task_that_dies_fails_its_jobs_alone(tmp_path, monkeypatch, capfd):
    """hydra/launcher=vectorized_slurm (its cluster local here): a group a task; the task killed fails its own
    jobs, one line each naming the task's log, and the other task's group completes."""
    import submitit

    (tmp_path / "dies.py").write_text(DIES_ON_A_TASK)
    # submitit waits 15 s for a dead task's result file (for slow network file systems): 1 s on this one
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    grid = [*GRID[:-2], "data._target_=dies.DiesOnATask", "data.seed=${seed}", "seed=1,2", "model.optimizer.lr=.03,.3"]
    slurm = ["hydra/launcher=vectorized_slurm", "hydra.launcher.group_size=2", "hydra.launcher.submitit.cluster=local"]
    code, out, jobs = sweep([*grid, *slurm], tmp_path, monkeypatch, capfd)
    assert code == 1 and "training 2 jobs stacked" not in out, out  # each group's lines are in its task's log
    failed = [line for line in out.splitlines() if line.startswith("error: job")]
    assert [line.split()[2] for line in failed] == ["00_seed=1,lr=0.03", "01_seed=1,lr=0.3"], out
    assert all(re.search(r"failed: task \d+ ended \(\w+\) with no result; see \S+_log.err$", line) for line in failed)
    assert [read_metrics(j)["status"] for j in jobs] == ["failed", "failed", "completed", "completed"]
    logs = [p.read_text() for p in jobs[0].parent.glob(".submitit/*/*_log.out")]
    assert sum("training 2 jobs stacked: #2-#3" in text and "epoch 100/100" in text for text in logs) == 1
    # a job that trains on its own (the only one of its sweep), a task that dies: the same line, and the report
    code, out, jobs = sweep([*grid[:-2], "seed=1", *slurm], tmp_path / "solo", monkeypatch, capfd)
    failed = [line for line in out.splitlines() if line.startswith("error: job")]
    assert code == 1 and len(failed) == 1 and "runs on its own" in out and "sweep report:" in out, out
    assert re.search(r"failed: task \d+ ended \(\w+\) with no result; see \S+_log.err$", failed[0]), out
    assert [read_metrics(j)["status"] for j in jobs] == ["failed"]


def test_a_stacked_job_keeps_the_scale_its_inputs_were_trained_at(tmp_path, monkeypatch, capfd):
    """data.standardize=true: a stacked job's checkpoint holds its inputs' scale as a run of its own's does, so
    load_model (and deepbasics-predict) answers raw rows exactly as that run's net does."""
    from conftest import DIABETES
    from deepbasics.api import load_model
    from deepbasics.run.training import train

    rows = np.loadtxt(DIABETES, delimiter=",", dtype=np.float32)[:5, :-1]
    args = ["experiment=logistic_diabetes", f"data.path={DIABETES}", "data.standardize=true", "epochs=20",
            "log_every=10", "val_every=10", "callbacks.model_checkpoint.every_n_epochs=10",
            f"question={rows.tolist()}"]  # fmt: skip
    code, output, jobs = sweep([*args, "seed=1,2", VECTORIZED], tmp_path / "sweep", monkeypatch, capfd)
    assert code == 0 and "training 2 jobs stacked" in output, output
    train(compose_train(*args, "seed=2", run_dir=tmp_path / "alone"))
    saved = [
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["deepbasics"]
        for d in (jobs[1], tmp_path / "alone")
    ]
    assert saved[0]["standardization"] == saved[1]["standardization"] is not None
    rows = torch.from_numpy(rows)
    answers = [read_metrics(d)["question"]["predictions"] for d in (jobs[1], tmp_path / "alone")]
    assert answers[0] == pytest.approx(answers[1], abs=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(load_model(jobs[1])(rows), load_model(tmp_path / "alone")(rows), rtol=0, atol=1e-5)
