"""Checkpoints users can trust: hard-kill + resume parity through the real commands, evaluate, predict,
weights_only loading and writes that a crash cannot half-finish."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import BIN, read_metrics, run_dirs, run_in_this_process
from deepbasics.config.run_dir import choose_run_dir, resumed_checkpoint
from deepbasics.errors import ConfigError
from deepbasics.models.lightning_modules import BinaryClassifier
from deepbasics.models.nets import NeuralNet
from deepbasics.run.checkpoints import FORMAT, AtomicCheckpointIO, read_checkpoint

# Adam, so the optimizer has state worth restoring; checkpoints every 200 epochs, logs every 50.
RECIPE = [
    "experiment=blobs_mlp", "epochs=600", "log_every=50", "val_every=100",
    "callbacks.model_checkpoint.every_n_epochs=200",
    "model.optimizer._target_=torch.optim.Adam", "model.optimizer.lr=0.01",
]  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """The uninterrupted run, in this process (the killed one below is a process of its own)."""
    from conftest import compose_train
    from deepbasics.run.training import train

    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(compose_train(*RECIPE, run_dir=run_dir))
    return run_dir


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_kill_9_between_checkpoints_then_resume_is_bit_identical(full_run, tmp_path, monkeypatch, capfd):
    killer = Path(__file__).with_name("stop_at.py")
    crashed = subprocess.run([sys.executable, str(killer), "kill", "300", *RECIPE], cwd=tmp_path, capture_output=True)
    assert crashed.returncode == -9
    (run_dir,) = run_dirs(tmp_path, "blobs_mlp")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 200
    assert not (run_dir / "metrics.json").exists()
    # what a kill during a checkpoint's write leaves (a SIGKILL runs no cleanup): the resume removes it
    dead = run_dir / "checkpoints" / ".tmp-k1ll3d.ckpt"
    dead.write_bytes(b"the first half of a checkpoint")

    resumed = run_in_this_process("deepbasics-train", [*RECIPE, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir / 'checkpoints' / 'last.ckpt'} at epoch 200/600" in resumed.stdout
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (full_run / "checkpoints").iterdir()) and not dead.exists(), names
    assert run_dirs(tmp_path, "blobs_mlp") == [run_dir], "resume writes into the same run directory"

    a = torch.load(full_run / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 600
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for pa, pb in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=True
    ):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(pa[name], pb[name]), name

    ma, mb = read_metrics(full_run), read_metrics(run_dir)
    for key in ("train", "val", "test", "monitor", "epochs", "status"):
        assert ma[key] == mb[key], key
    # one curve, as if never interrupted: no doubled or missing points, same values
    for tag in ("train/loss", "val/acc", "test/loss"):
        assert scalars(run_dir, tag) == scalars(full_run, tag), tag
    assert [step for step, _ in scalars(run_dir, "train/loss")] == list(range(0, 601, 50))


def test_evaluate_reproduces_the_training_test_metrics(full_run, tmp_path, monkeypatch, capfd):
    ckpt = f"ckpt_path={full_run / 'checkpoints' / 'last.ckpt'}"
    out = run_in_this_process("deepbasics-evaluate", [ckpt], tmp_path, monkeypatch, capfd)
    (eval_dir,) = (tmp_path / "outputs" / "evaluations").iterdir()
    evaluated = read_metrics(eval_dir)
    assert evaluated["test"] == read_metrics(full_run)["test"]
    assert evaluated["epochs"] == 600 and evaluated["experiment"] == "blobs_mlp"
    assert "acc" in out.stdout and str(eval_dir / "metrics.json") in out.stdout.replace("\n", "")


def test_predict_prints_probabilities_that_the_exported_plain_net_reproduces(full_run, tmp_path, monkeypatch, capfd):
    ckpt = full_run / "checkpoints" / "last.ckpt"
    out = run_in_this_process("deepbasics-predict", [f"ckpt_path={ckpt}", "inputs=[[2,2],[5,4],[1,-1]]"], tmp_path,
                              monkeypatch, capfd)  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    predictions = json.loads(lines[0])["predictions"]
    assert list(tmp_path.iterdir()) == [], "predict writes nothing"

    # the tutorial's way: model.pt into a fresh NeuralNet, sigmoid of its output
    net = NeuralNet(2, 5)
    net.load_state_dict(torch.load(full_run / "model.pt", weights_only=True))
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.tensor([[2.0, 2.0], [5.0, 4.0], [1.0, -1.0]])))[:, 0].tolist()
    assert predictions == expected
    assert predictions[0] < 0.5 < predictions[2]  # (2,2) sits by a label-0 centre, (1,-1) on a label-1 centre

    csv = tmp_path / "inputs.csv"
    csv.write_text("2,2\n5,4\n1,-1\n")
    from_file = run_in_this_process(
        "deepbasics-predict", [f"ckpt_path={ckpt}", f"inputs={csv}"], tmp_path, monkeypatch, capfd
    )
    assert json.loads(from_file.stdout)["predictions"] == predictions
    # a first row of column names, as training reads with data.header=true, is skipped ("1e3" stays a number)
    csv.write_text('x1,"x 2"\n2,2\n5,4\n1,-1\n')
    named = run_in_this_process(
        "deepbasics-predict", [f"ckpt_path={ckpt}", f"inputs={csv}"], tmp_path, monkeypatch, capfd
    )
    assert json.loads(named.stdout)["predictions"] == predictions
    csv.write_text("1e3,nan\n2,2\n")
    numbers = run_in_this_process(
        "deepbasics-predict", [f"ckpt_path={ckpt}", f"inputs={csv}"], tmp_path, monkeypatch, capfd
    )
    assert numbers.returncode == 2 and "inputs row 0, column 1 is nan" in numbers.stderr  # read as numbers
    csv.write_text("2,abc\n5,4\n")  # a first row with a typo is no header: it is named, not dropped
    typo = run_in_this_process(
        "deepbasics-predict", [f"ckpt_path={ckpt}", f"inputs={csv}"], tmp_path, monkeypatch, capfd
    )
    assert typo.returncode == 2 and "'abc'" in typo.stderr


def test_checkpoints_load_with_weights_only(full_run):
    paths = sorted((full_run / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in paths} >= {"last.ckpt"} and any(p.name.startswith("best-epoch") for p in paths)
    for path in paths:
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["hyper_parameters"]["net"]["_target_"] == "deepbasics.models.nets.NeuralNet"
        assert checkpoint["deepbasics"]["config"]["name"] == "blobs_mlp"
        module = BinaryClassifier.load_from_checkpoint(path, weights_only=True)
        assert module.hparams.optimizer == {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}


def test_resume_of_a_finished_run_extends_it_when_asked(full_run, tmp_path, monkeypatch, capfd):
    import shutil

    run_dir = tmp_path / "outputs" / "runs" / "blobs_mlp" / full_run.name
    shutil.copytree(full_run, run_dir)
    done = run_in_this_process("deepbasics-train", [*RECIPE, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert "already finished its 600 epochs" in done.stdout

    args = ["experiment=blobs_mlp", f"resume={run_dir}", "epochs=800"]
    assert run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd).returncode == 0
    assert read_metrics(run_dir)["epochs"] == 800
    assert [step for step, _ in scalars(run_dir, "train/loss")] == list(range(0, 801, 50))
    assert [step for step, _ in scalars(run_dir, "val/loss")] == list(range(100, 801, 100))

    assert read_metrics(full_run)["epochs"] == 600, "the copied-from run is untouched"
    assert max(step for step, _ in scalars(full_run, "train/loss")) == 600

    args = [f"resume={run_dir}", "model=logistic"]
    refused = run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: model=logistic cannot change on resume; start a new run instead"


def test_resume_targets(tmp_path):
    root = tmp_path / "outputs"
    older, newer, empty = (
        root / "runs" / "exp" / name
        for name in ("2026-01-01_00-00-00_a", "2026-01-02_00-00-00_b", "2026-01-03_00-00-00_c")
    )
    for age, run in enumerate((older, newer)):
        (run / "checkpoints").mkdir(parents=True)
        torch.save({}, run / "checkpoints" / "last.ckpt")
        os.utime(run / "checkpoints" / "last.ckpt", ns=(10**18 + age, 10**18 + age))
    empty.mkdir()
    assert choose_run_dir(str(root), "exp", "auto", "new") == newer
    assert choose_run_dir(str(root), "exp", str(older), "new") == older
    assert choose_run_dir(str(root), "exp", str(older / "checkpoints" / "last.ckpt"), "new") == older
    assert choose_run_dir(str(root), "exp", None, "new") == root / "runs" / "exp" / "new"
    assert resumed_checkpoint(older, "auto") == older / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="resume=auto: no run of other"):
        choose_run_dir(str(root), "other", "auto", "new")
    with pytest.raises(ConfigError, match="is a directory without checkpoints/last.ckpt"):
        choose_run_dir(str(root), "exp", str(empty), "new")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"deepbasics": {"format": FORMAT}, "step": 1}, path)

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"deepbasics": {"format": FORMAT}, "step": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_truncated_checkpoint_is_reported(full_run, tmp_path):
    data = (full_run / "checkpoints" / "last.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        read_checkpoint(cut)


def _signal_after_next_checkpoint(
    args: list[str], cwd: Path, signum: int, command: list[str] | None = None
) -> subprocess.CompletedProcess:
    """Start deepbasics-train (or ``command``, as it is), wait for it to write a checkpoint, then send it a
    signal mid-training."""
    import time

    from conftest import BIN

    def saved(path: Path) -> int:
        return path.stat().st_mtime_ns if path.exists() else 0

    runs = cwd / "outputs" / "runs" / "blobs_mlp"
    before = {p: saved(p) for p in runs.glob("*/checkpoints/last.ckpt")}
    command = command or [str(BIN / "deepbasics-train"), *args]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(saved(p) != before.get(p, 0) for p in runs.glob("*/checkpoints/last.ckpt")):
            proc.send_signal(signum)
            break
        time.sleep(0.005)
    out, err = proc.communicate()
    assert proc.poll() is not None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_and_sigterm_save_and_resume_exactly(tmp_path, monkeypatch, capfd):
    import signal as signals

    from conftest import compose_train
    from deepbasics.run.training import train

    recipe = ["epochs=1200", "log_every=50", "val_every=100", "callbacks.model_checkpoint.every_n_epochs=100"]
    reference = tmp_path / "whole"
    train(compose_train(*recipe, run_dir=reference))  # uninterrupted, in this process

    first = _signal_after_next_checkpoint(recipe, tmp_path, signals.SIGINT)
    assert first.returncode == 130, first.stderr
    (run_dir,) = run_dirs(tmp_path, "blobs_mlp")
    stopped = read_metrics(run_dir)
    assert stopped["status"] == "interrupted" and 0 < stopped["epochs"] < 1200
    # on stderr, like every message; the command it prints runs as printed (the script as it was started:
    # here by its path, as `.venv/bin/deepbasics-train` typed in the project would be)
    script = (
        "deepbasics-train"
        if shutil.which("deepbasics-train") == str(BIN / "deepbasics-train")
        else str(BIN / "deepbasics-train")
    )
    assert first.stderr.strip().splitlines()[-1] == (
        f"SIGINT: stopped at epoch {stopped['epochs']}/1200 and saved {run_dir / 'checkpoints' / 'last.ckpt'};"
        f" continue with: {script} experiment=blobs_mlp resume=auto"
    )
    assert "stopped at" not in first.stdout
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stopped["epochs"]

    printed = shlex.split(first.stderr.strip().splitlines()[-1].split("continue with: ")[1])
    second = _signal_after_next_checkpoint([], tmp_path, signals.SIGTERM, command=[*printed, *recipe])
    assert second.returncode == 143, second.stderr
    assert f"resuming {run_dir / 'checkpoints' / 'last.ckpt'} at epoch {stopped['epochs']}/1200" in second.stdout
    assert "SIGTERM: stopped at epoch" in second.stderr

    done = run_in_this_process("deepbasics-train", [*recipe, "resume=auto"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert run_dirs(tmp_path, "blobs_mlp") == [run_dir]
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_metrics(run_dir)["test"] == read_metrics(reference)["test"]
    for tag in ("train/loss", "val/loss"):
        assert scalars(run_dir, tag) == scalars(reference, tag), tag
