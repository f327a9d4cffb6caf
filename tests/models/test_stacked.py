"""Stacked training (models.stacked) against each job trained alone with torch's own optimizer: the
tutorials' nets and any other module, SGD, Adam and AdamW with their options, different hyperparameters
and data per job."""

import pytest
import torch
from hydra.utils import instantiate

from deepbasics.models.lightning_modules import BinaryClassifier, MulticlassClassifier, RegressionModule
from deepbasics.models.stacked import StackedModule, StackedNet, StackedOptimizer, optimizer_kind, unstackable_optimizer

# (module class, net spec, outputs kind): kind makes the targets
NETS = "deepbasics.models.nets."
TANH = {"_target_": "torch.nn.Sequential", "_args_": [
    {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 4}, {"_target_": "torch.nn.Tanh"},
    {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 1}]}  # fmt: skip
CASES = {
    "linear": (RegressionModule, {"_target_": NETS + "LinearRegression", "in_features": 3}, "values"),
    "logistic": (BinaryClassifier, {"_target_": NETS + "LogisticRegression", "in_features": 2}, "labels"),
    "neuralnet": (BinaryClassifier, {"_target_": NETS + "NeuralNet", "in_features": 2, "hidden_size": 5}, "labels"),
    "multiclass": (
        MulticlassClassifier,
        {"_target_": NETS + "NeuralNet", "in_features": 2, "hidden_size": 4, "out_features": 3},
        "classes",
    ),
    "sequential-tanh": (BinaryClassifier, TANH, "labels"),
}


def optimizer(name: str, **options) -> dict:
    return {"_target_": f"torch.optim.{name}", "_partial_": True, **options}


# each a group: what may differ between jobs differs
OPTIMIZERS = {
    "sgd": [optimizer("SGD", lr=0.05), optimizer("SGD", lr=0.02)],
    "sgd-momentum": [
        optimizer("SGD", lr=0.02, momentum=0.9, dampening=0.1, weight_decay=1e-3),
        optimizer("SGD", lr=0.05, momentum=0.5),
    ],
    "sgd-nesterov": [
        optimizer("SGD", lr=0.02, momentum=0.9, nesterov=True),
        optimizer("SGD", lr=0.01, momentum=0.7, nesterov=True, weight_decay=0.01),
    ],
    "adam": [optimizer("Adam", lr=0.01), optimizer("Adam", lr=0.003, betas=[0.8, 0.99], eps=1e-6, weight_decay=0.01)],
    "adam-amsgrad-decoupled": [
        optimizer("Adam", lr=0.01, amsgrad=True, decoupled_weight_decay=True),
        optimizer("Adam", lr=0.005, amsgrad=True, decoupled_weight_decay=True, weight_decay=0.1),
    ],
    "adamw": [optimizer("AdamW", lr=0.01), optimizer("AdamW", lr=0.02, weight_decay=0.1)],
}
STEPS = 150
FEATURES = {"linear": 3}  # the others: 2


def make_data(kind: str, features: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, features, generator=g)
    if kind == "values":
        y = x @ torch.tensor([[2.0], [-1.0], [0.5]]) + 0.1 * torch.randn(40, 1, generator=g)
    elif kind == "labels":
        y = (x[:, :1] * x[:, 1:2] > 0).float()
    else:
        y = (x[:, :1] > 0).float() + (x[:, 1:2] > 0.5).float()
    return x, y


def module_for(cls, net, optimizer):
    extra = {"num_classes": net["out_features"]} if cls is MulticlassClassifier else {}
    return cls(net=net, optimizer=optimizer, **extra)


@pytest.mark.parametrize("optimizers", OPTIMIZERS)
@pytest.mark.parametrize("case", CASES)
def test_stacked_jobs_train_as_each_alone(case, optimizers):
    cls, net_spec, kind = CASES[case]
    specs = OPTIMIZERS[optimizers]
    assert len({optimizer_kind(s) for s in specs}) == 1 and all(unstackable_optimizer(s) is None for s in specs)
    modules, data = [], []
    for job, spec in enumerate(specs):
        torch.manual_seed(job)
        modules.append(module_for(cls, net_spec, spec))
        data.append(make_data(kind, FEATURES.get(case, 2), seed=10 + job))
    stacked = StackedNet([m.net for m in modules])
    optimizer = StackedOptimizer(list(stacked.params), specs)
    xs, ys = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])

    # the stacked forward is each net's forward
    with torch.no_grad():
        for k, module in enumerate(modules):
            torch.testing.assert_close(stacked(xs)[k], module.net(data[k][0]), rtol=1e-5, atol=1e-6)

    alone = []
    for module, spec, (x, y) in zip(modules, specs, data, strict=True):
        opt = instantiate(spec)(module.net.parameters())  # torch's own optimizer, for this job alone
        for _ in range(STEPS):
            loss = module.loss_fn(module.net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        alone.append(opt)
    group = StackedModule(modules, log_every=1)
    group.net = stacked
    for _ in range(STEPS):
        losses = group.job_losses(stacked(xs), ys)
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()

    for k, module in enumerate(modules):
        for name, value in stacked.job_state(k).items():
            trained = dict(module.net.named_parameters())[name].detach()
            torch.testing.assert_close(value, trained, rtol=1e-4, atol=1e-5, msg=f"job {k} {name}")
        torch_state = [alone[k].state[p] for p in module.net.parameters()]
        for ours, theirs in zip(optimizer.job_state(k), torch_state, strict=True):
            assert set(ours) == set(theirs)
            for key in ours:
                torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=f"job {k} {key}")
        # the metrics the group measures for each job are the job's own
        x, y = data[k]
        own = module.measure("val", [(x, y)])
        together = group.measure("val", xs, ys)
        for key, value in own.items():
            assert float(together[key][k]) == pytest.approx(float(value), rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("case", CASES)
def test_one_job_is_a_group_too(case):
    cls, net_spec, kind = CASES[case]
    module = module_for(cls, net_spec, optimizer("SGD", lr=0.1))
    x, y = make_data(kind, FEATURES.get(case, 2), seed=3)
    own = module.measure("val", [(x, y)])
    alone = StackedModule([module], log_every=1).measure("val", x[None], y[None])
    for key, value in own.items():
        assert alone[key].shape == (1,) and float(alone[key][0]) == pytest.approx(float(value), rel=1e-5), key


def test_a_diverged_job_leaves_the_others_metrics_alone():
    cls, net_spec, kind = CASES["neuralnet"]
    modules = [module_for(cls, net_spec, optimizer("SGD", lr=0.1)) for _ in range(3)]
    data = [make_data(kind, 2, seed=20 + k) for k in range(3)]
    xs, ys = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    group = StackedModule(modules, log_every=1)
    with torch.no_grad():
        group.net.params[0][1] = float("nan")  # job 1 diverged
    group.failed_at[1] = 7
    together = group.measure("val", xs, ys)
    assert torch.isnan(together["val/acc"][1]) and torch.isnan(together["val/loss"][1])
    for k in (0, 2):
        own = modules[k].measure("val", [data[k]])
        for key, value in own.items():
            assert float(together[key][k]) == pytest.approx(float(value), rel=1e-5), (k, key)


def test_options_outside_the_stacked_step_are_named():
    assert "differentiable" in unstackable_optimizer(optimizer("SGD", lr=0.1, differentiable=True))
    assert "RMSprop" in unstackable_optimizer(optimizer("RMSprop", lr=0.1))
    assert unstackable_optimizer(optimizer("SGD", lr=0.1, foreach=True)) is None  # how torch computes the same step
    assert optimizer_kind(optimizer("SGD", lr=0.1)) != optimizer_kind(optimizer("SGD", lr=0.1, momentum=0.9))
    assert optimizer_kind(optimizer("Adam", lr=0.1)) != optimizer_kind(optimizer("Adam", lr=0.1, amsgrad=True))
    assert optimizer_kind(optimizer("Adam", lr=0.1)) != optimizer_kind(optimizer("AdamW", lr=0.1))
