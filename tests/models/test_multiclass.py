"""experiment=blobs_multiclass and model=multiclass: four make_blobs clusters as four classes, against a
plain PyTorch cross-entropy loop, with torchmetrics' numbers checked against sklearn's."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_experiment, compose_train, data_of, read_metrics, run_in_this_process
from deepbasics.errors import ConfigError
from deepbasics.run.training import train

SHORT = ["epochs=600", "log_every=100", "val_every=300", "callbacks.model_checkpoint.every_n_epochs=300"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("multiclass")
    cfg = compose_experiment("blobs_multiclass", *SHORT, run_dir=run_dir)
    train(cfg)
    return cfg, run_dir


def test_equals_a_plain_cross_entropy_loop(run):
    cfg, run_dir = run
    x, y = data_of(cfg).splits["train"]
    torch.manual_seed(cfg.seed)  # the same seeded init as the run's NeuralNet(2, 8, 4)
    from deepbasics.models.nets import NeuralNet

    model = NeuralNet(2, 8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(600):
        cost = F.cross_entropy(model(x), y[:, 0].long())
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
    trained = torch.load(run_dir / "model.pt")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=1e-6)
    assert trained["linear_2.weight"].shape == (4, 8)
    metrics = read_metrics(run_dir)
    with torch.no_grad():
        final = float(F.cross_entropy(model(x), y[:, 0].long()))
    assert metrics["train"]["loss"] == pytest.approx(final, rel=1e-5)


def test_accuracy_and_macro_f1_agree_with_sklearn(run):
    cfg, run_dir = run
    x, y = data_of(cfg).splits["test"]
    from deepbasics.models.nets import NeuralNet

    net = NeuralNet(2, 8, 4)
    net.load_state_dict(torch.load(run_dir / "model.pt"))
    with torch.no_grad():
        predicted = net(x).argmax(dim=1).numpy()
    truth = y[:, 0].long().numpy()
    test = read_metrics(run_dir)["test"]
    assert set(test) == {"acc", "f1", "loss"}
    assert test["acc"] == pytest.approx(accuracy_score(truth, predicted))
    assert test["f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert 0.5 < test["acc"] < 1.0, "the classes touch (cluster_std 0.6): some test rows are confused"


def test_figures_and_predictions(run, monkeypatch, capfd):
    cfg, run_dir = run
    for name in ("fit.png", "confusion.png", "loss.png"):
        assert (run_dir / "figures" / name).stat().st_size > 10_000, name
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"visual/fit", "visual/confusion"} <= set(events.Tags()["images"])
    args = [f"ckpt_path={run_dir}", "inputs=[[1,1],[-1,-1],[1,-1],[-1,1]]"]  # the run directory: its last.ckpt
    out = run_in_this_process("deepbasics-predict", args, run_dir, monkeypatch, capfd)
    answer = json.loads(out.stdout)
    assert answer["predictions"] == [0, 1, 2, 3]  # the four centres
    assert all(len(p) == 4 and sum(p) == pytest.approx(1.0) for p in answer["probabilities"])
    assert [max(range(4), key=p.__getitem__) for p in answer["probabilities"]] == answer["predictions"]


def test_a_csv_with_an_integer_class_column(tmp_path):
    table = tmp_path / "three.csv"
    rows = [(i % 3 + 0.1 * i, -(i % 3), i % 3) for i in range(30)]
    table.write_text("".join(f"{a},{b},{c}\n" for a, b, c in rows))
    # the diabetes recipe's CSV set-up (SGD lr 1 from zero) with three classes and a softmax regression,
    # as the README writes it (the input width from the data)
    model = ["experiment=logistic_diabetes", "model=multiclass", "model.num_classes=3",
             "model.net._target_=deepbasics.models.nets.LogisticRegression", "~model.net.hidden_size"]  # fmt: skip
    train(compose_train(*model, f"data.path={table}", "epochs=300", run_dir=tmp_path / "run"))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["train"]["acc"] > 0.9 and metrics["optimum"] is None
    net = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["net"]
    assert net["_target_"].endswith("LogisticRegression") and net["in_features"] == 2 and "hidden_size" not in net
    bad = tmp_path / "bad.csv"
    bad.write_text(table.read_text() + "1,1,3\n")
    with pytest.raises(ConfigError, match="data.train has label 3; a 3-class classifier needs labels 0 to 2"):
        train(compose_train(*model, f"data.path={bad}", run_dir=tmp_path / "r2"))
    with pytest.raises(ConfigError, match="model.net.out_features=2 but model.num_classes=3"):
        train(compose_train(*model, f"data.path={table}", "model.net.out_features=2", run_dir=tmp_path / "r3"))
