"""The README's "Your own model and data" as a user follows it: its files written into an empty directory,
its commands run there as shown, then what the README says they give checked; and a kill -9 of a run on that
DataModule, resumed, against the same run never stopped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import BIN, REPO, read_metrics, run_in_this_process

SECTION = "## Your own model and data"
STOP_AT = REPO / "tests" / "run" / "stop_at.py"


def readme_section() -> tuple[dict[str, str], str]:
    """The section's files (a block whose first line is ``# <path>``) and its shell commands."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)
    files = {
        body.splitlines()[0].removeprefix("# "): body
        for lang, body in blocks
        if lang in ("python", "yaml") and body.startswith("# ")
    }
    (commands,) = [body for lang, body in blocks if lang == "bash"]
    return files, commands


def user_directory(tmp_path: Path) -> Path:
    files, _ = readme_section()
    assert {"mynets.py", "mydata.py", "conf/model/tanh.yaml", "conf/data/circles.yaml"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    return tmp_path


def shell(commands: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(["bash", "-e", "-c", commands], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_your_own_net_and_datamodule_as_the_readme_shows(tmp_path, monkeypatch):
    home = user_directory(tmp_path)
    proc = shell(readme_section()[1], home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    (run,) = sorted((home / "outputs" / "runs" / "circles").iterdir())  # trained, then resumed in place
    metrics = read_metrics(run)
    assert metrics["status"] == "completed" and metrics["epochs"] == 40
    for split in ("train", "val", "test"):
        assert set(metrics[split]) == {"loss", "acc", "auroc"}, split
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "checkpoints").glob("best-epoch*.ckpt"))
    assert "does not hold its splits in memory" in (run / "train.log").read_text()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40 * 8  # 240 rows / 32

    (evaluation,) = (home / "outputs" / "evaluations").glob("*/metrics.json")
    assert json.loads(evaluation.read_text())["test"]["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)
    answer = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"predictions"')))
    assert len(answer["predictions"]) == 2 and all(0 <= p <= 1 for p in answer["predictions"])

    monkeypatch.syspath_prepend(str(home))
    import deepbasics

    net = deepbasics.load_model(run)
    assert type(net).__name__ == "TanhNet"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[f"net.{k}"]) for k, v in net.state_dict().items())

    (sweep,) = (home / "outputs" / "multiruns" / "circles").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.name[:2].isdigit())
    assert [j.name for j in jobs] == ["00_lr=0.003", "01_lr=0.03"]
    assert all(read_metrics(j)["status"] == "completed" for j in jobs) and (sweep / "summary.md").is_file()
    (stacked,) = (home / "outputs" / "multiruns" / "tanh_blobs").iterdir()
    jobs = sorted(p for p in stacked.iterdir() if p.name[:2].isdigit())
    assert len(jobs) == 4 and all(read_metrics(j)["status"] == "completed" for j in jobs)
    assert "training 4 jobs stacked" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_run_on_your_datamodule_killed_and_resumed_ends_as_one_never_stopped(tmp_path, monkeypatch, capfd):
    home = user_directory(tmp_path)
    args = ["--config-dir", "conf", "data=circles", "model=tanh", "name=circles", "epochs=30", "val_every=10"]
    env = {**os.environ, "PYTHONPATH": ".", "PYTHONWARNINGS": "ignore"}
    killed = subprocess.run([sys.executable, str(STOP_AT), "kill", "25", *args], cwd=home, env=env, capture_output=True)
    assert killed.returncode == -9
    (run,) = sorted((home / "outputs" / "runs" / "circles").iterdir())
    assert not (run / "metrics.json").exists()
    # the killed run finished as the user types it, then the same run never stopped (in this process)
    proc = subprocess.run([str(BIN / "deepbasics-train"), *args, "resume=auto"], cwd=home, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.syspath_prepend(str(home))
    assert run_in_this_process("deepbasics-train", args, home, monkeypatch, capfd).returncode == 0
    first, second = sorted((home / "outputs" / "runs" / "circles").iterdir())
    assert first == run
    ends = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (first, second)]
    assert ends[0]["global_step"] == ends[1]["global_step"] == 30 * 8
    for name, value in ends[1]["state_dict"].items():
        assert torch.equal(ends[0]["state_dict"][name], value), name
    assert {s: read_metrics(first)[s] for s in ("train", "val", "test")} == {
        s: read_metrics(second)[s] for s in ("train", "val", "test")
    }
