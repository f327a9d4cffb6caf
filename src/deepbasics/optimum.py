"""The best answer a linear model class can give on the training data, to set beside what SGD reached:
closed-form least squares for linear regression, unpenalised maximum likelihood for logistic regression."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepbasics.nets import LinearRegression, LogisticRegression


def optimum_report(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> dict | None:
    """{"method", "loss", "weight", "bias", "loss_gap", "param_gap"} for the net's class on (x, y); for
    linearly separable logistic data, no finite optimum exists and the report says so. None for other nets."""
    if isinstance(net, LinearRegression):
        method, weight, bias = "least squares", *_least_squares(x, y)
    elif isinstance(net, LogisticRegression):
        fit = _max_likelihood(x, y)
        if fit is None:
            return {
                "method": "unpenalised logistic regression",
                "separable": True,
                "note": "the classes are linearly separable: the loss approaches 0 as |W| grows, no finite optimum",
            }
        method, weight, bias = "unpenalised logistic regression", *fit
    else:
        return None
    best = nn.Linear(x.shape[1], 1).double()
    with torch.no_grad():
        best.weight.copy_(torch.as_tensor(weight).reshape(1, -1))
        best.bias.copy_(torch.as_tensor(bias).reshape(1))
        loss = float(loss_fn(best(x.double()), y.double()))
        trained = float(loss_fn(net(x), y))
        theta = torch.cat([p.detach().double().flatten() for p in (net.linear.weight, net.linear.bias)])
        best_theta = torch.cat([best.weight.flatten(), best.bias])
    report = {"method": method, "loss": loss, "weight": weight.tolist(), "bias": float(bias)}
    if method.startswith("unpenalised"):
        report["separable"] = False
    report.update(loss_gap=trained - loss, param_gap=float(torch.linalg.vector_norm(theta - best_theta)))
    return report


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float]:
    design = np.hstack([x.double().numpy(), np.ones((len(x), 1))])
    solution, *_ = np.linalg.lstsq(design, y.double().numpy()[:, 0], rcond=None)
    return solution[:-1], float(solution[-1])


def _max_likelihood(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float] | None:
    """sklearn's unpenalised fit, or None when a hyperplane separates the classes (the fit then
    classifies every training point right, which only a separable set allows)."""
    from sklearn.linear_model import LogisticRegression as SkLogistic

    features, labels = x.double().numpy(), y.numpy()[:, 0].astype(int)
    # C = inf: no penalty, the plain maximum-likelihood fit.
    model = SkLogistic(C=np.inf, tol=1e-10, max_iter=10_000).fit(features, labels)
    if model.score(features, labels) == 1.0:
        return None
    return model.coef_[0], float(model.intercept_[0])
