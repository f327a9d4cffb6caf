"""A finished run or sweep job whose metrics.json was cut short (a copy interrupted, a disk that filled) is not
finished: resume=auto writes its end-of-run files again from last.ckpt, to the same numbers, and the sweep
report names the job until then."""

from __future__ import annotations

import json

import pytest

from conftest import read_metrics, run_dirs, run_in_this_process

SHORT = ["epochs=20", "log_every=10", "val_every=10", "callbacks.model_checkpoint.every_n_epochs=10"]


def cut_short(path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def test_a_run_whose_metrics_json_was_cut_short_is_finished_again_from_its_checkpoint(tmp_path, monkeypatch, capfd):
    args = ["experiment=linear_scores", *SHORT]
    assert run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd).returncode == 0
    (run,) = run_dirs(tmp_path, "linear_scores")
    whole = read_metrics(run)
    cut_short(run / "metrics.json")

    again = run_in_this_process("deepbasics-train", [*args, f"resume={run}"], tmp_path, monkeypatch, capfd)
    assert again.returncode == 0, again.stderr
    assert f"{run / 'metrics.json'} does not read back" in again.stdout
    assert f"finishing {run}" in again.stdout and "already finished" not in again.stdout
    rewritten = read_metrics(run)
    for stage in ("train", "val", "test"):
        assert rewritten.get(stage) == whole.get(stage), stage  # the end phase depends only on last.ckpt
    assert rewritten["status"] == whole["status"] == "completed" and rewritten["epochs"] == whole["epochs"]

    done = run_in_this_process("deepbasics-train", [*args, f"resume={run}"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0 and "already finished" in done.stdout


@pytest.mark.parametrize("launcher", ["basic", "vectorized"])
def test_a_sweep_job_whose_metrics_json_was_cut_short_is_named_then_finished(launcher, tmp_path, monkeypatch, capfd):
    grid = ["-m", "experiment=linear_scores", *SHORT, "seed=1,2", f"hydra/launcher={launcher}"]
    assert run_in_this_process("deepbasics-train", grid, tmp_path, monkeypatch, capfd).returncode == 0
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "linear_scores").iterdir()
    job = min(d for d in sweep.iterdir() if (d / "metrics.json").is_file())
    whole = read_metrics(job)
    cut_short(job / "metrics.json")

    from deepbasics.reports.sweep import job_rows

    row = next(r for r in job_rows(sweep) if r["job"] == job.name)
    assert row["status"] == "damaged" and "metrics.json" in row["error"] and row["value"] is None

    again = run_in_this_process("deepbasics-train", [*grid, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already finished") == 1
    rewritten = json.loads((job / "metrics.json").read_text())
    assert rewritten["status"] == "completed" and rewritten["train"] == whole["train"]
    assert [r["status"] for r in job_rows(sweep)] == ["completed", "completed"]


def test_a_sweep_report_that_cannot_be_written_stops_the_command_in_one_line(tmp_path, monkeypatch, capfd):
    import errno
    import os

    from deepbasics.reports import sweep

    def full(sweep_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(sweep_dir / "summary.png"))

    monkeypatch.setattr(sweep, "write_report", full)
    grid = ["-m", "experiment=linear_scores", *SHORT, "seed=1,2"]
    result = run_in_this_process("deepbasics-train", grid, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and "Warning" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: sweep ") and "its report could not be written" in line
    assert "No space left on device" in line and "scripts/sweep_report.py" in line
