"""The Python API as a notebook uses it: many fits in one process, no global state left behind, the same
seed giving the same run in two directories, errors as exceptions carrying the command line's message."""

from __future__ import annotations

import logging
import os

import pytest
import torch

import deepbasics
from conftest import run_cli
from deepbasics.errors import ConfigError, RunFailed

SHORT = ["epochs=500", "seed=3"]


def _handlers() -> dict[str, int]:
    names = ["", "lightning", "lightning.pytorch", "deepbasics", "hydra"]
    return {name: len(logging.getLogger(name).handlers) for name in names}


def test_fit_twice_in_one_process(tmp_path, monkeypatch, capfd):
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.chdir(tmp_path)
    a = deepbasics.fit("blobs_mlp", overrides=SHORT)
    out, err = capfd.readouterr()
    for chatter in ("GPU available", "TPU available", "Tip", "`Trainer.fit` stopped"):
        assert chatter not in out + err, "the API is as quiet as the command line"
    assert "run directory:" in out
    handlers = _handlers()  # after the first fit: importing Lightning adds its own handler once
    b = deepbasics.fit("blobs_mlp", overrides=SHORT)
    assert not GlobalHydra.instance().is_initialized(), "no Hydra global state left behind"
    assert os.getcwd() == str(tmp_path) and _handlers() == handlers
    assert a.run_dir != b.run_dir and a.run_dir.parent == tmp_path / "outputs" / "runs" / "blobs_mlp"
    assert a.metrics["status"] == "completed" and a.metrics["epochs"] == 500 and a.metrics["seed"] == 3
    for key in ("train", "val", "test", "monitor"):
        assert a.metrics[key] == b.metrics[key], key
    assert a.checkpoint == a.run_dir / "checkpoints" / "last.ckpt" and a.checkpoint.is_file()
    assert not a.model.training
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
        # the same net whichever way it is loaded
        for source in (a.run_dir, a.checkpoint, a.run_dir / "model.pt"):
            assert torch.equal(deepbasics.load_model(source)(x), a.model(x)), source


def test_fit_errors_raise_the_command_lines_message(tmp_path):
    cli = run_cli("deepbasics-train", "experiment=blobs_mlp", "epoks=10", cwd=tmp_path, check=False)
    with pytest.raises(ConfigError) as raised:
        deepbasics.fit("blobs_mlp", overrides=["epoks=10"], output_dir=tmp_path / "outputs")
    assert cli.stderr.strip() == f"error: {raised.value}"
    with pytest.raises(ConfigError, match="Invalid learning rate: -1"):
        deepbasics.fit("blobs_mlp", overrides=["model.optimizer.lr=-1"], output_dir=tmp_path / "outputs")
    with pytest.raises(ConfigError, match="Could not find 'experiment/nope'"):
        deepbasics.fit("nope", output_dir=tmp_path / "outputs")
    with pytest.raises(RunFailed, match="the loss became inf at epoch 47"):
        deepbasics.fit("linear_scores", overrides=["model.optimizer.lr=0.2"], output_dir=tmp_path / "outputs")
    # and the process goes on: a good fit right after
    ok = deepbasics.fit("linear_scores", overrides=["epochs=50"], output_dir=tmp_path / "outputs")
    assert ok.metrics["status"] == "completed"


def test_load_model_needs_to_know_the_net(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        deepbasics.load_model(tmp_path / "nothing")
    torch.save({"linear.weight": torch.zeros(1, 1), "linear.bias": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="alone does not say which net it holds"):
        deepbasics.load_model(tmp_path / "model.pt")


def test_resume_through_the_api_takes_value_overrides(tmp_path):
    first = deepbasics.fit("linear_scores", overrides=["epochs=40"], output_dir=tmp_path)
    longer = deepbasics.fit("linear_scores", overrides=[f"resume={first.run_dir}", "epochs=80"], output_dir=tmp_path)
    assert longer.run_dir == first.run_dir and longer.metrics["epochs"] == 80


def test_a_refused_writer_writes_nothing_into_the_holders_directory(tmp_path):
    from deepbasics.files import lock_run_dir, unlock_run_dir

    run = deepbasics.fit("linear_scores", overrides=["epochs=40"], output_dir=tmp_path).run_dir
    before = (run / "metrics.json").read_bytes()
    # another process holds it: a child that takes the lock and waits
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", f"from deepbasics.files import lock_run_dir; lock_run_dir({str(run)!r}); input()"],
        stdin=subprocess.PIPE,
    )
    try:
        import time

        deadline = time.monotonic() + 30
        while f"process {holder.pid}" not in (run / ".lock").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(ConfigError, match=f"is in use by process {holder.pid}"):
            deepbasics.fit("linear_scores", overrides=[f"resume={run}", "epochs=80"], output_dir=tmp_path)
        assert (run / "metrics.json").read_bytes() == before
    finally:
        holder.communicate(b"\n")
    lock_run_dir(run)  # free again once the holder is gone
    unlock_run_dir(run)


def test_a_command_run_earlier_in_the_process_leaves_no_overrides_behind(tmp_path, monkeypatch):
    """Hydra keeps the last app's config in a process-wide singleton; a later in-process resume must not
    read that app's command line (here a group choice, which a resume would refuse)."""
    import sys

    from deepbasics.cli import commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["deepbasics-train", "model=neuralnet", "epochs=20", "val_every=10",
                                      "log_every=10", "callbacks.model_checkpoint.every_n_epochs=10"])  # fmt: skip
    commands.train()
    first = deepbasics.fit("linear_scores", overrides=["epochs=40"], output_dir=tmp_path)
    again = deepbasics.fit("linear_scores", overrides=[f"resume={first.run_dir}", "epochs=60"], output_dir=tmp_path)
    assert again.metrics["epochs"] == 60
