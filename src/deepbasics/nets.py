"""The tutorials' plain models. They return raw values (regression) or logits (classifiers):
the sigmoid belongs to the loss and to whoever shows a probability."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deepbasics.errors import ConfigError


class LinearRegression(nn.Module):
    """H(x) = Wx + b, the study-hours regression."""

    def __init__(self, in_features: int = 1):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class LogisticRegression(nn.Module):
    """Wx + b as a logit; sigmoid(Wx + b) is the pass probability."""

    def __init__(self, in_features: int = 1):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class NeuralNet(nn.Module):
    """layer1 -> ReLU -> layer2, the make_blobs XOR classifier (its sigmoid moved into the loss)."""

    def __init__(self, in_features: int = 2, hidden_size: int = 5):
        super().__init__()
        self.layer1 = nn.Linear(in_features, hidden_size)
        self.relu = nn.ReLU()
        self.layer2 = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.relu(self.layer1(x)))


NETS: dict[str, type[nn.Module]] = {
    "LinearRegression": LinearRegression,
    "LogisticRegression": LogisticRegression,
    "NeuralNet": NeuralNet,
}


@dataclass(frozen=True)
class NetSpec:
    """A net as plain values, the form saved in checkpoints.

    ``init`` is ``"default"`` (PyTorch's init), ``"zeros"``, or a mapping from parameter name to values;
    the single-layer nets also accept ``weight``/``bias`` for ``linear.weight``/``linear.bias``.
    """

    name: str
    in_features: int
    hidden_size: int | None = None
    init: Any = field(default="default")

    def __post_init__(self) -> None:
        if self.name not in NETS:
            raise ConfigError(f"unknown net '{self.name}': model.net.name must be one of {', '.join(NETS)}")
        _require_positive_int("model.net.in_features", self.in_features)
        if self.name == "NeuralNet":
            _require_positive_int("model.net.hidden_size", self.hidden_size)
        elif self.hidden_size is not None:
            raise ConfigError(f"model.net.hidden_size is only for NeuralNet, not {self.name}: remove it")
        if not (self.init in ("default", "zeros") or isinstance(self.init, dict)):
            raise ConfigError(
                f"model.net.init={self.init!r}: use default, zeros, or a mapping like {{weight: [[4.0]], bias: [1.0]}}"
            )

    def build(self) -> nn.Module:
        kwargs = {"in_features": self.in_features}
        if self.hidden_size is not None:
            kwargs["hidden_size"] = self.hidden_size
        net = NETS[self.name](**kwargs)
        _initialise(net, self.init)
        return net


def build_net(spec: dict) -> nn.Module:
    try:
        return NetSpec(**spec).build()
    except TypeError as err:  # an unknown or missing field
        raise ConfigError(f"model.net: {err}") from None


def _require_positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


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
