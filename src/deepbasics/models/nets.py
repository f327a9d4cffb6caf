"""The tutorials' plain models. They return raw values (regression) or logits (classifiers):
the sigmoid belongs to the loss and to whoever shows a probability."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepbasics.config.schema import NET_NAMES, NetSpec
from deepbasics.errors import ConfigError


class LinearRegression(nn.Module):
    """H(x) = Wx + b, the study-hours regression."""

    LAYERS = ("linear",)  # forward's order of layers, read by models.stacked to train many copies at once

    def __init__(self, in_features: int = 1):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class LogisticRegression(nn.Module):
    """Wx + b as a logit; sigmoid(Wx + b) is the pass probability (softmax over ``out_features`` logits for
    several classes)."""

    LAYERS = ("linear",)

    def __init__(self, in_features: int = 1, out_features: int = 1):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class NeuralNet(nn.Module):
    """linear_1 -> ReLU -> linear_2, the make_blobs XOR classifier, with the tutorial's attribute names so
    its own reload code takes our model.pt. The tutorial ends forward() in ``self.sigmoid``; here the
    loss applies it (BCE on logits) and so does ``predictions``: forward returns the logit."""

    LAYERS = ("linear_1", "relu", "linear_2")

    def __init__(self, in_features: int = 2, hidden_size: int = 5, out_features: int = 1):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.relu = nn.ReLU()
        self.linear_2 = nn.Linear(hidden_size, out_features)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.relu(self.linear_1(x)))


NETS: dict[str, type[nn.Module]] = {
    "LinearRegression": LinearRegression,
    "LogisticRegression": LogisticRegression,
    "NeuralNet": NeuralNet,
}
assert tuple(NETS) == NET_NAMES


# Parameter names of earlier releases -> today's (the NeuralNet's layers took the tutorial's names).
RENAMED_PARAMETERS = {"layer1.": "linear_1.", "layer2.": "linear_2."}


def upgrade_state_dict(state: dict, prefix: str = "") -> dict:
    """``state`` with parameter names of earlier releases renamed (keys under ``prefix``), so an older
    checkpoint or model.pt keeps loading."""
    renamed = {}
    for key, value in state.items():
        for old, new in RENAMED_PARAMETERS.items():
            if key.startswith(prefix + old):
                key = prefix + new + key[len(prefix + old) :]
        renamed[key] = value
    return renamed


def predictions(out: torch.Tensor, classifier: bool) -> torch.Tensor:
    """What a user sees: probabilities for classifiers (the sigmoid of one logit, the softmax of one logit per
    class), values for regression."""
    if not classifier:
        return out
    return torch.softmax(out, dim=1) if out.shape[1] > 1 else torch.sigmoid(out)


def build_net(spec: dict) -> nn.Module:
    """The net a spec describes (validated by ``schema.NetSpec``), initialised as it asks."""
    checked = NetSpec.of(spec)
    if checked.in_features is None:  # run.build fills it from the data before a net is built
        raise ConfigError("model.net.in_features is not known: give it, or build the net from a run's data")
    kwargs = {"in_features": checked.in_features}
    if checked.hidden_size is not None:
        kwargs["hidden_size"] = checked.hidden_size
    if checked.out_features != 1:
        kwargs["out_features"] = checked.out_features
    net = NETS[checked.name](**kwargs)
    _initialise(net, checked.init)
    return net


@torch.no_grad()
def _initialise(net: nn.Module, init: Any) -> None:
    if init == "default":
        return
    params = dict(net.named_parameters())
    if init == "zeros":
        for p in params.values():
            p.zero_()
        return
    for key, values in init.items():
        name = key if key in params else f"linear.{key}"
        if name not in params:
            raise ConfigError(f"model.net.init has '{key}', but the net's parameters are {', '.join(params)}")
        value = torch.as_tensor(values, dtype=params[name].dtype)
        if value.numel() != params[name].numel():
            raise ConfigError(
                f"model.net.init.{key} has {value.numel()} values, the parameter needs {params[name].numel()}"
                f" (shape {list(params[name].shape)})"
            )
        params[name].copy_(value.reshape(params[name].shape))
