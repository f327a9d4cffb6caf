"""The run's own callbacks as a user meets them: Lightning's bar on a terminal and plain lines elsewhere,
callbacks=early_stopping, and the learning-rate monitor on the tutorial-epoch axis."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import sys
import termios

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_train, read_metrics, run_in_this_process

RECIPE = ["epochs=600", "log_every=50", "val_every=100", "callbacks.model_checkpoint.every_n_epochs=100"]


def _on_a_terminal(args: list[str], cwd, rows: int = 40, columns: int = 120) -> str:
    """What deepbasics-train shows in a terminal of this size (0x0: one that reports none): this process
    forked, running the console script's entry point on the terminal, so that it does not pay for Python,
    torch and Lightning to start again."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    pid = os.fork()
    if pid == 0:  # the child: the terminal as its stdout and stderr, never back in pytest
        try:
            os.setsid()
            for fd in (1, 2):
                os.dup2(child, fd)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # pytest's capture replaced them
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            os.chdir(cwd)
            sys.argv = ["deepbasics-train", *args]
            from deepbasics.cli.commands import train

            train()
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    os.close(parent)
    return b"".join(chunks).decode(errors="replace").replace("\r", "\n")


def test_a_terminal_gets_a_live_bar_and_a_pipe_the_plain_lines(tmp_path, monkeypatch, capfd):
    shown = _on_a_terminal(RECIPE, tmp_path)
    (run,) = (tmp_path / "outputs" / "runs" / "blobs_mlp").iterdir()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # the terminal's colour and cursor codes
    bars = [line for line in plain.splitlines() if line.startswith("Epoch ")]  # Lightning's own bar
    assert len(bars) >= 3, plain  # it moves while training
    final_loss = f"train/loss={read_metrics(run)['train']['loss']:.3g}"  # the last train point's
    assert bars[-1].startswith("Epoch 599: 100%") and final_loss in bars[-1], bars[-1]
    assert "epoch 100/600" not in shown

    lines = [f"{epoch}/600" for epoch in range(100, 601, 100)]
    piped = run_in_this_process("deepbasics-train", RECIPE, tmp_path, monkeypatch, capfd).stdout
    assert "Epoch " not in piped
    assert [line.split()[1] for line in piped.splitlines() if line.startswith("epoch ")] == lines

    # a terminal that reports no size (script, docker -t) cannot show a bar: it gets the lines
    sizeless = _on_a_terminal(RECIPE, tmp_path, rows=0, columns=0)
    assert "Epoch " not in sizeless
    assert [line.split()[1] for line in sizeless.splitlines() if line.startswith("epoch ")] == lines, sizeless


def test_callbacks_early_stopping_counts_validations(tmp_path):
    from deepbasics.run.training import train

    cfg = compose_train(
        "callbacks=early_stopping", "callbacks.early_stopping.patience=2", "callbacks.early_stopping.min_delta=0.02",
        "epochs=5000", "val_every=100", "log_every=100",
        "callbacks.model_checkpoint.every_n_epochs=100", run_dir=tmp_path,
    )  # fmt: skip
    train(cfg)
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "stopped_early" and metrics["epochs"] < 5000
    # two validations in a row without a 0.02 improvement in val/loss: the stop comes at a validation
    assert metrics["epochs"] % 100 == 0 and "did not improve in the last 2 records" in metrics["stopped"]["reason"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and "test" in metrics


def test_learning_rate_monitor_on_the_epoch_axis(tmp_path):
    from deepbasics.run.training import train

    train(compose_train("model/scheduler=step", "model.scheduler.step_size=300", "epochs=1500", run_dir=tmp_path))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    points = {e.step: round(e.value, 8) for e in events.Scalars("lr-SGD")}
    # Lightning's LearningRateMonitor at the start of each epoch: the schedule halved the rate at 300, 600, 900
    assert sorted(points) == list(range(1500))
    assert [points[e] for e in (0, 299, 300, 599, 600, 900, 1499)] == [
        0.03,
        0.03,
        0.015,
        0.015,
        0.0075,
        0.00375,
        0.001875,
    ]
