import pytest
import torch
from torch import nn

from deepbasics.errors import ConfigError
from deepbasics.models import BinaryClassifier, MulticlassClassifier, RegressionModule
from deepbasics.models.nets import LinearRegression, NeuralNet

NEURALNET = {"_target_": "deepbasics.models.nets.NeuralNet", "in_features": 2, "hidden_size": 5}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.03}


def test_nets_keep_the_tutorials_parameter_names():
    assert set(NeuralNet(2, 5).state_dict()) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    assert set(LinearRegression(1).state_dict()) == {"linear.weight", "linear.bias"}
    assert NeuralNet(2, 5)(torch.zeros(7, 2)).shape == (7, 1)


def test_zero_and_explicit_init():
    logistic = {"_target_": "deepbasics.models.nets.LogisticRegression", "in_features": 2}
    zero = BinaryClassifier(logistic, SGD, init="zeros").net
    assert all(torch.count_nonzero(p) == 0 for p in zero.parameters())
    linear = {"_target_": "deepbasics.models.nets.LinearRegression", "in_features": 1}
    fixed = RegressionModule(linear, SGD, init={"linear.weight": [[4.0]], "linear.bias": [1.0]}).net
    assert fixed.linear.weight.item() == 4.0 and fixed.linear.bias.item() == 1.0
    assert fixed(torch.tensor([[2.0]])).item() == 9.0  # H(x) = 4x + 1 at x = 2


def test_any_module_is_a_net():
    """A net is any torch.nn.Module its _target_ names, with its own arguments: torch's own layers too."""
    sequential = {"_target_": "torch.nn.Sequential", "_args_": [
        {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 3}, {"_target_": "torch.nn.Tanh"},
        {"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 1}]}  # fmt: skip
    module = BinaryClassifier(sequential, SGD)
    assert isinstance(module.net[1], nn.Tanh) and module(torch.zeros(4, 2)).shape == (4, 1)
    assert module.hparams.net == sequential  # the config itself: plain values in checkpoints


@pytest.mark.parametrize(
    "init, fragment",
    [({"linear.weight": [1.0, 2.0]}, "has 2 values"), ({"gamma": [1.0]}, "has 'gamma'"), ("ones", "use default")],
)
def test_bad_inits_say_what_is_wrong(init, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RegressionModule({"_target_": "deepbasics.models.nets.LinearRegression", "in_features": 1}, SGD, init=init)


def test_classes_must_match_the_nets_outputs():
    with pytest.raises(ConfigError, match="out_features=3 but model.num_classes=4"):
        MulticlassClassifier(NEURALNET | {"out_features": 3}, SGD, num_classes=4)


def _module_grads(module, x, y):
    module.zero_grad()
    loss = module.loss_fn(module(x), y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.net.named_parameters()}


def test_classifier_loss_and_gradients_equal_the_tutorials_sigmoid_bce():
    torch.manual_seed(0)
    module = BinaryClassifier(NEURALNET, SGD)
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16, 1)).float()
    loss, grads = _module_grads(module, x, y)

    reference = NeuralNet(2, 5)
    reference.load_state_dict(module.net.state_dict())
    hypothesis = torch.sigmoid(reference(x))  # the tutorial: sigmoid output, then the BCE formula
    cost = -(y * torch.log(hypothesis) + (1 - y) * torch.log(1 - hypothesis)).mean()
    cost.backward()
    torch.testing.assert_close(loss, cost.detach(), rtol=0, atol=1e-6)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=1e-6)


def test_regression_loss_and_gradients_equal_hand_written_mse():
    torch.manual_seed(0)
    module = RegressionModule({"_target_": "deepbasics.models.nets.LinearRegression", "in_features": 3}, SGD)
    x, y = torch.randn(10, 3), torch.randn(10, 1)
    loss, grads = _module_grads(module, x, y)
    w, b = module.net.linear.weight.detach(), module.net.linear.bias.detach()
    residual = x @ w.T + b - y
    torch.testing.assert_close(loss, (residual**2).mean())
    torch.testing.assert_close(grads["linear.weight"], 2 * (residual * x).mean(0, keepdim=True))
    torch.testing.assert_close(grads["linear.bias"], 2 * residual.mean(0))


def test_optimizer_and_scheduler_in_the_templates_form():
    adam = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.1, "betas": [0.8, 0.9]}
    step = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 5}
    module = BinaryClassifier(NEURALNET, adam, scheduler=step)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.Adam) and tuple(optimizer.param_groups[0]["betas"]) == (0.8, 0.9)
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.StepLR) and scheduler["interval"] == "epoch"


def test_hyperparameters_are_plain_values():
    module = BinaryClassifier(NEURALNET, SGD)
    assert dict(module.hparams) == {"net": NEURALNET, "optimizer": SGD, "scheduler": None, "init": "default"}
    assert module.loss_fn is nn.functional.binary_cross_entropy_with_logits
