"""`deepbasics-train` end to end: the real command, its run directory, and parity with a plain PyTorch loop."""

import subprocess

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import BIN, compose_train, read_metrics, run_dirs, run_in_this_process
from deepbasics.data import BlobsDataModule
from deepbasics.models.nets import NeuralNet
from deepbasics.run.training import train


def plain_blobs_loop(epochs: int, seed: int = 42, lr: float = 0.03) -> NeuralNet:
    """The tutorial's loop on the same data: seed, build, then one full-batch SGD step per epoch."""
    dm = BlobsDataModule(centers=[[1, 1], [-1, -1], [1, -1], [-1, 1]], n_val=20, labels=[0, 0, 1, 1], seed=seed)
    dm.setup()
    x, y = dm.splits["train"]
    torch.manual_seed(seed)
    model = NeuralNet(2, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    criterion = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        cost = criterion(model(x), y)
        cost.backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("epochs, log_every", [(300, 100), (301, 100), (7, 1)])
def test_training_equals_the_plain_loop(tmp_path, epochs, log_every):
    cfg = compose_train(
        f"epochs={epochs}",
        f"log_every={log_every}",
        f"val_every={log_every}",
        f"callbacks.model_checkpoint.every_n_epochs={log_every}",
        run_dir=tmp_path,
    )
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == epochs
    trained = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    reference = plain_blobs_loop(epochs).state_dict()
    assert trained.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(trained[name], reference[name], rtol=0, atol=0)


def test_train_command_end_to_end(tmp_path):
    """The default experiment as a user runs it, next to a short run started in the same second."""
    command = str(BIN / "deepbasics-train")
    runs = [
        subprocess.Popen([command, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in ([], ["epochs=100"])
    ]
    outputs = [proc.communicate() for proc in runs]
    for proc, (_, err) in zip(runs, outputs, strict=True):
        assert proc.returncode == 0, err

    dirs = run_dirs(tmp_path, "blobs_mlp")
    assert len(dirs) == 2, "two runs must never share a directory"
    full = next(d for d in dirs if read_metrics(d)["epochs"] == 2000)
    stdout = outputs[0][0]
    assert f"run directory: {full}" in stdout.replace("\n", "")
    assert "epoch 2000/2000" in stdout and "test" in stdout

    metrics = read_metrics(full)
    assert metrics["experiment"] == "blobs_mlp" and metrics["seed"] == 42 and metrics["status"] == "completed"
    assert metrics["test"]["acc"] == 1.0  # the tutorial's result on the XOR blobs
    assert metrics["train"]["acc"] == 1.0 and metrics["train"]["loss"] < 0.1
    assert metrics["monitor"] == {"metric": "val/loss", "value": metrics["val"]["loss"]}

    assert (full / ".hydra" / "config.yaml").is_file()
    checkpoints = sorted(p.name for p in (full / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch") for name in checkpoints)
    assert metrics["best_checkpoint"].startswith(str(full / "checkpoints" / "best-epoch"))

    events = EventAccumulator(str(full))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == list(range(0, 2001, 100))
    assert [e.step for e in events.Scalars("val/acc")] == [500, 1000, 1500, 2000]
    assert events.Scalars("test/acc")[-1].value == 1.0
    assert events.Scalars("train/loss")[-1].value == pytest.approx(metrics["train"]["loss"])


def test_logged_points_do_not_depend_on_the_intervals(tmp_path):
    """Logging and validating every epoch gives, at the points a sparser run logs, the sparser run's numbers."""
    results = {}
    for every in (1, 100):
        run_dir = tmp_path / str(every)
        train(compose_train("epochs=200", f"log_every={min(every, 10)}", f"val_every={every}", run_dir=run_dir))
        events = EventAccumulator(str(run_dir))
        events.Reload()
        results[every] = (
            {e.step: e.value for e in events.Scalars("train/loss")},
            {e.step: e.value for e in events.Scalars("val/loss")},
            read_metrics(run_dir),
        )
    (train_one, val_one, metrics_one), (train_sparse, val_sparse, metrics_sparse) = results[1], results[100]
    assert set(train_sparse) == set(range(0, 201, 10)) and set(val_sparse) == {100, 200}
    assert set(train_one) == set(range(201)) and set(val_one) == set(range(1, 201))
    assert {step: train_one[step] for step in train_sparse} == train_sparse
    assert {step: val_one[step] for step in val_sparse} == val_sparse
    for stage in ("train", "val", "test"):
        assert metrics_one[stage] == metrics_sparse[stage]


@pytest.mark.parametrize("experiment", ["logistic_pass_fail", "linear_scores"])
def test_a_tutorial_run_ends_with_its_learned_parameters(experiment, tmp_path, monkeypatch, capfd):
    """The learned W and b, as the tutorials print list(model.parameters()): 4 decimals on the console (no float32
    digits beyond them), whole in metrics.json, both those of model.pt."""
    proc = run_in_this_process(
        "deepbasics-train", [f"experiment={experiment}", "epochs=50"], tmp_path, monkeypatch, capfd
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = run_dirs(tmp_path, experiment)
    state = {k: v.double() for k, v in torch.load(run / "model.pt", weights_only=True).items()}
    weight, bias = state["linear.weight"], state["linear.bias"]
    shown = [f"linear.weight {weight.numpy().round(4).tolist()}", f"linear.bias {bias.numpy().round(4).tolist()}"]
    assert f"learned: {', '.join(shown)}" in proc.stdout.splitlines()
    assert read_metrics(run)["parameters"] == {"linear.weight": weight.tolist(), "linear.bias": bias.tolist()}
    if experiment == "logistic_pass_fail":  # and the tutorial's question, answered by model.pt as the tutorial does
        x = torch.tensor([[2.0, 2.0], [5.0, 4.0]], dtype=torch.float64)
        expected = torch.sigmoid(x @ weight.T + bias)[:, 0]
        answer = read_metrics(run)["question"]
        assert answer["inputs"] == [[2, 2], [5, 4]]
        assert answer["predictions"] == pytest.approx(expected.tolist(), rel=1e-6)
        assert f"model([[2, 2], [5, 4]]) = {expected.numpy().round(4).tolist()}" in proc.stdout.splitlines()
    else:  # no question, no line
        assert "question" not in read_metrics(run) and "model(" not in proc.stdout


def test_a_question_that_does_not_fit_the_net_fails_before_training(tmp_path, monkeypatch, capfd):
    proc = run_in_this_process(
        "deepbasics-train", ["experiment=logistic_pass_fail", "question=[[1,2,3]]"], tmp_path, monkeypatch, capfd
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: question of shape 1x3: the model takes rows of 2 features; give N x 2\n"
    assert not list((tmp_path / "outputs" / "runs" / "logistic_pass_fail").glob("*/checkpoints/*.ckpt"))
    # stacked jobs check it before their group trains, too
    args = ["-m", "hydra/launcher=vectorized", "experiment=logistic_pass_fail", "question=[[1,2,3]]", "seed=1,2"]
    sweep = run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd)
    assert sweep.returncode == 1
    jobs = list((tmp_path / "outputs" / "multiruns" / "logistic_pass_fail").glob("*/0*"))
    assert len(jobs) == 2 and not list((tmp_path / "outputs" / "multiruns").rglob("*.ckpt"))
    assert all(read_metrics(job)["error"].startswith("question of shape 1x3") for job in jobs)
