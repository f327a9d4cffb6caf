"""The tutorials' plain nets with their attribute names, so their reload code takes a run's model.pt. They return values
or logits: the sigmoid belongs to the loss and whoever shows a probability. Any ``nn.Module`` can be ``model.net``."""

from __future__ import annotations

import torch
from torch import nn


class LinearRegression(nn.Module):
    """H(x) = Wx + b, the study-hours regression."""

    def __init__(self, in_features: int = 1, out_features: int = 1):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class LogisticRegression(LinearRegression):
    """Wx + b as a logit: sigmoid(Wx + b) is the pass probability (several classes: softmax over the logits)."""


class NeuralNet(nn.Module):
    """linear_1 -> ReLU -> linear_2, the make_blobs XOR classifier. The tutorial ends forward() in
    ``self.sigmoid``; here the loss applies it (BCE on logits): forward returns the logit."""

    def __init__(self, in_features: int = 2, hidden_size: int = 5, out_features: int = 1):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.relu = nn.ReLU()
        self.linear_2 = nn.Linear(hidden_size, out_features)
        self.sigmoid = nn.Sigmoid()  # unused: kept so the tutorial's class and ours have the same attributes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.relu(self.linear_1(x)))
