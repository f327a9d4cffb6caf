"""The best answer a linear model class can give on the training data, to set beside what SGD reached:
closed-form least squares for linear regression, unpenalised maximum likelihood for logistic regression."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from deepbasics.config.schema import OPTIMUM_LOSS
from deepbasics.models.nets import LinearRegression, LogisticRegression

# Above this many training rows the exact fit costs more than the training (optimum_max_rows).
MAX_ROWS = 100_000
LOGISTIC = "unpenalised logistic regression"


def has_optimum(net: dict) -> bool:
    """Whether ``optimum`` knows the best answer of this net's class (a net spec, as in the config)."""
    return net.get("name") == "LinearRegression" or (
        net.get("name") == "LogisticRegression" and net.get("out_features", 1) == 1
    )


def optimum(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, max_rows: int = MAX_ROWS
) -> dict | None:
    """{"method", "loss", "weight", "bias"} for the net's class on (x, y); for linearly separable logistic
    data no finite optimum exists and the report says so. None for nets without a known optimum. Above
    ``max_rows`` training rows the report says it was skipped: the exact fit would cost more than the
    training (seconds for a million rows) and the comparison is meant for the tutorials' small tables."""
    if max_rows is not None and len(x) > max_rows and isinstance(net, (LinearRegression, LogisticRegression)):
        return {"skipped": f"{len(x)} training rows, more than optimum_max_rows={max_rows}"}
    if isinstance(net, LinearRegression):  # one output; several-class logistic models have no report here
        method, (weight, bias) = "least squares", _least_squares(x, y)
    elif isinstance(net, LogisticRegression) and net.linear.out_features == 1:
        fit = _max_likelihood(x, y)
        if fit is None:
            return {
                "method": LOGISTIC,
                "separable": True,
                "note": "the classes are linearly separable: the loss approaches 0 as |W| grows, no finite optimum",
            }
        method, (weight, bias) = LOGISTIC, fit
    else:
        return None
    best = _linear(weight, bias)
    with torch.no_grad():
        loss = float(loss_fn(best(x.double()), y.double()))
    report = {"method": method, "loss": loss, "weight": weight.tolist(), "bias": bias}
    if method == LOGISTIC:
        report["separable"] = False
    return report


def gap(report: dict, net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> dict:
    """How far the trained net is from the optimum: in loss, and as the distance between (W, b) vectors.
    Both sides are evaluated in float64, so rounding cannot put SGD below the optimum."""
    weight, bias = net.linear.weight.detach().double().cpu(), net.linear.bias.detach().double().cpu()
    trained, best = (
        _linear(weight.flatten().numpy(), float(bias)),
        _linear(np.asarray(report["weight"]), report["bias"]),
    )
    with torch.no_grad():
        loss = float(loss_fn(trained(x.double().cpu()), y.double().cpu()))
        distance = torch.linalg.vector_norm(
            torch.cat([trained.weight.flatten() - best.weight.flatten(), trained.bias - best.bias])
        )
    return {"loss_gap": loss - report["loss"], "param_gap": float(distance)}


def final_report(net, x, y, loss_fn, report: dict | None = None, max_rows: int = MAX_ROWS) -> dict | None:
    """The optimum (``report`` when it is known already) with the gap the trained net left, for the end of
    a run; None for nets without a known optimum."""
    report = optimum(net, x, y, loss_fn, max_rows) if report is None else dict(report)
    if report and "loss" in report:
        report.update(gap(report, net, x, y, loss_fn))
    return report


class OptimumGap(L.Callback):
    """Logs the optimum's loss as a flat line from epoch 0 beside train/loss (the end of the run logs it
    again with the gap SGD left); ``report`` serves the figures drawn while training."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.report: dict | None = None
        self.max_rows = max_rows

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        x, y = trainer.datamodule.splits["train"]
        net, loss_fn = pl_module.net, pl_module.loss_fn
        self.report = optimum(net, x.to(pl_module.device), y.to(pl_module.device), loss_fn, self.max_rows)
        if trainer.global_step == 0:
            log_optimum_line(self.report, trainer.loggers)


def log_optimum_line(report: dict | None, loggers) -> None:
    """The optimum's loss as the start of its flat line beside train/loss (at epoch 0), when there is one."""
    if report and "loss" in report:
        for logger in loggers:
            logger.log_metrics({OPTIMUM_LOSS: report["loss"]}, step=0)


def _linear(weight: np.ndarray, bias: float) -> nn.Linear:
    layer = nn.Linear(len(weight), 1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight).reshape(1, -1))
        layer.bias.fill_(bias)
    return layer


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float]:
    design = np.hstack([x.double().cpu().numpy(), np.ones((len(x), 1))])
    solution, *_ = np.linalg.lstsq(design, y.double().cpu().numpy()[:, 0], rcond=None)
    return solution[:-1], float(solution[-1])


def _max_likelihood(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float] | None:
    """sklearn's unpenalised fit, or None when a hyperplane separates the classes (the fit then
    classifies every training point right, which only a separable set allows)."""
    from sklearn.linear_model import LogisticRegression as SkLogistic

    features, labels = x.double().cpu().numpy(), y.cpu().numpy()[:, 0].astype(int)
    # C = inf: no penalty, the plain maximum-likelihood fit.
    model = SkLogistic(C=np.inf, tol=1e-10, max_iter=10_000).fit(features, labels)
    if model.score(features, labels) == 1.0:
        return None
    return model.coef_[0], float(model.intercept_[0])
