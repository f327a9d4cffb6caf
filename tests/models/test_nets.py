import pytest
import torch
from torch import nn

from deepbasics.errors import ConfigError
from deepbasics.models.lightning_modules import BinaryClassifier, RegressionModule
from deepbasics.models.nets import LinearRegression, NeuralNet, build_net


def test_nets_keep_the_tutorials_parameter_names():
    assert set(NeuralNet(2, 5).state_dict()) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    assert set(LinearRegression(1).state_dict()) == {"linear.weight", "linear.bias"}
    assert NeuralNet(2, 5)(torch.zeros(7, 2)).shape == (7, 1)


def test_zero_and_explicit_init():
    zero = build_net({"name": "LogisticRegression", "in_features": 2, "init": "zeros"})
    assert all(torch.count_nonzero(p) == 0 for p in zero.parameters())
    fixed = build_net({"name": "LinearRegression", "in_features": 1, "init": {"weight": [[4.0]], "bias": [1.0]}})
    assert fixed.linear.weight.item() == 4.0 and fixed.linear.bias.item() == 1.0
    # the result of H(x) = 4x + 1 at x = 2
    assert fixed(torch.tensor([[2.0]])).item() == 9.0


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"name": "Perceptron", "in_features": 1}, "unknown net 'Perceptron'"),
        ({"name": "NeuralNet", "in_features": 2, "hidden_size": 0}, "hidden_size=0 must be a positive integer"),
        ({"name": "LinearRegression", "in_features": 1, "init": {"weight": [1.0, 2.0]}}, "has 2 values"),
        ({"name": "LinearRegression", "in_features": 1, "init": {"gamma": [1.0]}}, "has 'gamma'"),
    ],
)
def test_bad_net_specs_say_what_is_wrong(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_net(spec)


def _module_grads(module, x, y):
    module.zero_grad()
    loss = module.loss_fn(module(x), y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.net.named_parameters()}


def test_classifier_loss_and_gradients_equal_the_tutorials_sigmoid_bce():
    torch.manual_seed(0)
    module = BinaryClassifier({"name": "NeuralNet", "in_features": 2, "hidden_size": 5}, {"lr": 0.03})
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
    module = RegressionModule({"name": "LinearRegression", "in_features": 3}, {"lr": 0.01})
    x, y = torch.randn(10, 3), torch.randn(10, 1)
    loss, grads = _module_grads(module, x, y)
    w, b = module.net.linear.weight.detach(), module.net.linear.bias.detach()
    residual = x @ w.T + b - y
    torch.testing.assert_close(loss, (residual**2).mean())
    torch.testing.assert_close(grads["linear.weight"], 2 * (residual * x).mean(0, keepdim=True))
    torch.testing.assert_close(grads["linear.bias"], 2 * residual.mean(0))


def test_optimizer_from_config():
    module = BinaryClassifier({"name": "LogisticRegression", "in_features": 1}, {"name": "adam", "lr": 0.1})
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 0.1
    with pytest.raises(ConfigError, match="lr=-1 must be a positive number"):
        BinaryClassifier({"name": "LogisticRegression", "in_features": 1}, {"lr": -1}).configure_optimizers()


def test_hyperparameters_are_plain_values():
    module = BinaryClassifier({"name": "NeuralNet", "in_features": 2, "hidden_size": 5}, {"lr": 0.03})
    assert dict(module.hparams) == {
        "net": {"name": "NeuralNet", "in_features": 2, "hidden_size": 5},
        "optimizer": {"lr": 0.03},
        "scheduler": None,
    }
    assert module.loss_fn is nn.functional.binary_cross_entropy_with_logits
