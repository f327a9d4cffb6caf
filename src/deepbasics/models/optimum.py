"""The best a linear model can do on its training data, beside what SGD reached: least squares for a regression,
unpenalised maximum likelihood for a binary classifier. For a net that is one ``nn.Linear`` with one output (the
tutorials' linear and logistic regressions) on data offering its whole training split."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# report key -> tag
POINTS = {"loss": "train/optimum_loss", "loss_gap": "train/loss_gap", "param_gap": "train/param_gap"}
MAX_ROWS = 100_000  # above this many training rows the exact fit would cost more than the training
LOGISTIC = "unpenalised logistic regression"


def linear_layer(net: nn.Module) -> nn.Linear | None:
    """The one Linear layer with one output that is the whole net, or None for any other net."""
    children = list(net.children())
    layer = net if isinstance(net, nn.Linear) else children[0] if len(children) == 1 else None
    return layer if isinstance(layer, nn.Linear) and layer.out_features == 1 else None


def optimum(module, x: torch.Tensor, y: torch.Tensor) -> dict | None:
    """{"method", "loss", "weight", "bias"} for the module's net on (x, y); for linearly separable logistic
    data no finite optimum exists and the report says so. None for nets it does not apply to."""
    if linear_layer(module.net) is None or getattr(module, "num_classes", None):
        return None
    if len(x) > MAX_ROWS:
        return {"skipped": f"{len(x)} training rows, more than {MAX_ROWS}: the exact fit would cost more than SGD"}
    if not module.is_classifier:
        method, (weight, bias) = "least squares", _least_squares(x, y)
    else:
        fit = _max_likelihood(x, y)
        if fit is None:
            note = "the classes are linearly separable: the loss approaches 0 as |W| grows, no finite optimum"
            return {"method": LOGISTIC, "separable": True, "note": note}
        method, (weight, bias) = LOGISTIC, fit
    loss = float(module.loss_fn(_outputs(weight, bias, x), y.double().cpu()))
    report = {"method": method, "loss": loss, "weight": weight.tolist(), "bias": bias}
    return report | ({"separable": False} if method == LOGISTIC else {})


def final_report(module, x: torch.Tensor, y: torch.Tensor, report: dict | None = None) -> dict | None:
    """The optimum ``report`` (``optimum``'s) with the gap the trained net left: in loss, and as the distance
    between (W, b) vectors, both in float64 so rounding cannot put SGD below the optimum."""
    if not report or "loss" not in report:
        return report
    layer = linear_layer(module.net)
    weight, bias = layer.weight.detach().double().cpu().flatten().numpy(), float(layer.bias.detach())
    loss = float(module.loss_fn(_outputs(weight, bias, x), y.double().cpu()))
    distance = np.linalg.norm(np.append(weight - np.asarray(report["weight"]), bias - report["bias"]))
    return report | {"loss_gap": loss - report["loss"], "param_gap": float(distance)}


def optimum_points(report: dict | None) -> dict[str, float]:
    """The optimum's points beside train/loss: its loss (a flat line), and in a final report the gaps."""
    return {tag: report[key] for key, tag in POINTS.items() if key in (report or {})}


def _outputs(weight: np.ndarray, bias: float, x: torch.Tensor) -> torch.Tensor:
    """Wx + b of the given (W, b) on x, in float64."""
    return x.double().cpu() @ torch.as_tensor(weight, dtype=torch.float64).reshape(-1, 1) + bias


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float]:
    design = np.hstack([x.double().cpu().numpy(), np.ones((len(x), 1))])
    solution, *_ = np.linalg.lstsq(design, y.double().cpu().numpy()[:, 0], rcond=None)
    return solution[:-1], float(solution[-1])


def _max_likelihood(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float] | None:
    """sklearn's unpenalised fit, or None when a hyperplane separates the classes (the fit then classifies
    every training point right, which only a separable set allows)."""
    from sklearn.linear_model import LogisticRegression

    features, labels = x.double().cpu().numpy(), y.cpu().numpy()[:, 0].astype(int)
    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(features, labels)  # C = inf: no penalty
    if model.score(features, labels) == 1.0:
        return None
    return model.coef_[0], float(model.intercept_[0])
