"""debug=fast | overfit | profiler | anomaly: short runs for finding bugs, kept out of the real outputs."""

from __future__ import annotations

import torch

from conftest import compose_train, data_of, read_metrics, run_in_this_process


def test_debug_fast_runs_end_to_end_under_outputs_debug(tmp_path, monkeypatch, capfd):
    assert run_in_this_process("deepbasics-train", ["debug=fast"], tmp_path, monkeypatch, capfd).returncode == 0
    assert not (tmp_path / "outputs" / "runs").exists(), "real runs stay clean"
    (run,) = (tmp_path / "outputs" / "debug" / "runs" / "blobs_mlp").iterdir()
    metrics = read_metrics(run)
    assert metrics["status"] == "completed" and metrics["epochs"] == 10
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", "best-epoch9.ckpt"}
    assert (run / "model.pt").is_file() and (run / "figures" / "fit.png").is_file()


def test_debug_overfit_trains_on_one_batch_until_its_loss_is_near_zero(tmp_path):
    """Lightning's overfit_batches=1: the first training batch of every epoch, the same one (no shuffle); with
    full batches it is the whole training split."""
    from deepbasics.run.training import train

    cfg = compose_train("debug=overfit", "epochs=1500", run_dir=tmp_path)
    assert cfg.trainer.overfit_batches == 1 and cfg.paths.output_dir == "outputs/debug"
    train(cfg)
    metrics = read_metrics(tmp_path)
    assert metrics["train"]["acc"] == 1.0 and metrics["train"]["loss"] < 0.05
    batches = compose_train("debug=overfit", "data.batch_size=6", run_dir=tmp_path)
    data = data_of(batches)
    data.trainer = type(
        "Trainer",
        (),
        {
            "overfit_batches": 1,
            "current_epoch": 3,
            "global_rank": 0,
            "world_size": 1,
            "strategy": type("Strategy", (), {"root_device": torch.device("cpu")}),
        },
    )()
    first = next(iter(data.train_dataloader()))[0]
    assert torch.equal(first, data.splits["train"][0][:6]), "the first rows, at every epoch"


def test_debug_profiler_writes_lightnings_report_into_the_run(tmp_path):
    from deepbasics.run.training import train

    train(
        compose_train(
            "debug=profiler",
            "epochs=200",
            "val_every=100",
            "callbacks.model_checkpoint.every_n_epochs=100",
            run_dir=tmp_path,
        )
    )
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "run_training_epoch" in report and "[Strategy]SingleDeviceStrategy.training_step" in report


def test_debug_anomaly_turns_on_autograd_anomaly_detection(tmp_path, monkeypatch):
    from deepbasics.models.lightning_modules import TaskModule
    from deepbasics.run.training import train

    seen = []
    step = TaskModule.training_step

    def probed(self, batch, batch_idx):
        seen.append(torch.is_anomaly_enabled())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(TaskModule, "training_step", probed)
    short = ["epochs=10", "val_every=5", "log_every=5", "callbacks.model_checkpoint.every_n_epochs=5"]
    train(compose_train("debug=anomaly", *short, run_dir=tmp_path / "anomaly"))
    train(compose_train(*short, run_dir=tmp_path / "plain"))
    assert seen == [True] * 10 + [False] * 10
