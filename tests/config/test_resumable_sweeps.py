"""A killed sweep finishes with one command, exactly as if it had never stopped: real processes killed with
SIGKILL at random points (during the report too), then `resume=auto` until done; a mismatched resume, a
second resume of the same sweep and a plain re-run into a used sweep directory are refused in one line."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import BIN, read_metrics, run_in_this_process

GRID = ["-m", "experiment=blobs_mlp", "epochs=300", "log_every=50", "val_every=50", "ckpt_every=50",
        "model.optimizer.lr=0.03,0.1,0.3", "seed=1,2"]  # fmt: skip


def jobs_of(sweep: Path) -> list[Path]:
    return sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))


def sweeps(cwd: Path) -> list[Path]:
    root = cwd / "outputs" / "multiruns" / "blobs_mlp"
    return sorted(root.iterdir()) if root.is_dir() else []


def killed_when(args: list[str], cwd: Path, ready) -> int:
    """deepbasics-train started as a user types it, SIGKILLed once ``ready()`` holds; its exit status."""
    proc = subprocess.Popen([str(BIN / "deepbasics-train"), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    return proc.wait()


def curve(job: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(job / "tensorboard"), size_guidance={"scalars": 0})
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


@pytest.mark.slow
def test_a_sweep_killed_anywhere_finishes_with_resume_auto(tmp_path):
    reference = tmp_path / "whole"
    reference.mkdir()
    whole = subprocess.run([str(BIN / "deepbasics-train"), *GRID], cwd=reference, capture_output=True)
    assert whole.returncode == 0
    cwd = tmp_path / "killed"
    cwd.mkdir()
    rng = random.Random(5)

    seen: dict[Path, int] = {}
    written = [0]

    def checkpoints() -> int:
        """last.ckpt writes seen so far (each job writes one every 50 of its 300 epochs: 36 in all)."""
        for path in cwd.glob("outputs/multiruns/*/*/*/checkpoints/last.ckpt"):
            mtime = path.stat().st_mtime_ns
            if seen.get(path) != mtime:
                seen[path] = mtime
                written[0] += 1
        return written[0]

    # killed three times while jobs train (after 1-4, then 2-6 more checkpoints), then while it writes its report
    first = rng.randint(1, 4)
    assert killed_when(GRID, cwd, lambda: checkpoints() >= first) == -signal.SIGKILL
    (sweep,) = sweeps(cwd)
    for _ in range(2):
        target = checkpoints() + rng.randint(2, 6)
        assert killed_when([*GRID, "resume=auto"], cwd, lambda t=target: checkpoints() >= t) == -signal.SIGKILL
    killed_when([*GRID, "resume=auto"], cwd, lambda: (sweep / "summary.csv").exists())
    command = [str(BIN / "deepbasics-train"), *GRID, "resume=auto"]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sweeps(cwd) == [sweep], "every resume finished the same sweep, in its directory"
    assert_same_sweep(sweeps(reference)[0], sweep)
    assert (sweep / "summary.md").read_text().count("| completed |") == 6


def test_a_resume_of_another_sweep_and_a_second_writer_are_refused(tmp_path, monkeypatch, capfd):
    import sys

    short = ["-m", "experiment=linear_scores", "epochs=20", "log_every=10", "val_every=10", "ckpt_every=10",
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
