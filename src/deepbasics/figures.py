"""Pictures of a run: the fitted model over its training data, and the loss curve. Drawn every
``figure_every`` epochs into TensorBoard and once more as PNG files in ``<run dir>/figures/`` at the end."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from deepbasics.nets import predictions


def fit_figure(net, x: torch.Tensor, y: torch.Tensor, classifier: bool, step: int, optimum: dict | None = None):
    """Decision boundary (2 features, classifier), fitted sigmoid (1 feature, classifier) or fitted line
    (1 feature, regression) over the points; None for wider inputs."""
    x, y = x.detach().cpu(), y.detach().cpu()[:, 0]
    width = x.shape[1]
    if width > 2 or (width == 2 and not classifier):
        return None
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    with torch.no_grad():
        if width == 2:
            lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
            g0, g1 = torch.meshgrid(torch.linspace(lo[0], hi[0], 200), torch.linspace(lo[1], hi[1], 200), indexing="ij")
            grid = torch.stack([g0.flatten(), g1.flatten()], 1)
            p = predictions(net(grid), True).reshape(g0.shape)
            shade = ax.contourf(
                g0.numpy(), g1.numpy(), p.numpy(), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6
            )
            ax.contour(g0.numpy(), g1.numpy(), p.numpy(), levels=[0.5], colors="k", linewidths=1.5)
            fig.colorbar(shade, ax=ax, label="P(y = 1)")
            for label, marker in ((0, "o"), (1, "s")):
                pts = x[y == label]
                ax.scatter(pts[:, 0], pts[:, 1], marker=marker, edgecolors="k", label=f"y = {label}",
                           c="tab:blue" if label == 0 else "tab:red")  # fmt: skip
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
        else:
            span = x.max() - x.min()
            line = torch.linspace(float(x.min() - 0.1 * span), float(x.max() + 0.1 * span), 300).reshape(-1, 1)
            ax.plot(line[:, 0], predictions(net(line), classifier)[:, 0], "k-", label="model")
            if optimum and "weight" in optimum and not classifier:
                best = optimum["weight"][0] * line[:, 0] + optimum["bias"]
                ax.plot(line[:, 0], best, "g--", label=f"least squares ({optimum['loss']:.4g})")
            ax.scatter(x[:, 0], y, c="tab:red", edgecolors="k", zorder=3, label="data")
            ax.set_xlabel("x")
            ax.set_ylabel("P(y = 1)" if classifier else "y")
    ax.set_title(f"epoch {step}")
    ax.legend(loc="best", fontsize="small")
    return fig


def loss_figure(tensorboard_dir: Path):
    """train/val loss against epochs, read back from the run's own TensorBoard events (resumed parts included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for tag, style in (("train/loss", "-"), ("val/loss", "o--"), ("optimum/loss", "g:")):
        if tag in tags:
            points = events.Scalars(tag)
            ax.plot([p.step for p in points], [p.value for p in points], style, label=tag)
    ax.set_xlabel("epoch (full-batch steps)")
    ax.set_ylabel("loss")
    if all(p.value > 0 for p in events.Scalars("train/loss")):
        ax.set_yscale("log")
    ax.legend()
    ax.set_title("loss")
    return fig


class Figures(L.Callback):
    """The fit figure into TensorBoard every ``every`` epochs and at the last one (never every epoch)."""

    def __init__(self, every: int, gap=None):
        self.every, self.gap, self.last = every, gap, None  # gap: the OptimumGap callback, for the optimum line

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._start_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        step = trainer.global_step
        if not self.every or step == self._start_step or (step % self.every and step < trainer.max_steps):
            return
        x, y = trainer.datamodule.splits["train"]
        optimum = self.gap.report if self.gap is not None else None
        fig = fit_figure(pl_module.net, x.to(pl_module.device), y, pl_module.is_classifier, step, optimum)
        if fig is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
                logger.experiment.add_figure("fit", fig, global_step=step, close=False)
        self.last = fig


def save_pngs(run_dir: Path, figures: Figures | None, tensorboard_dir: Path | None) -> list[Path]:
    """figures/fit.png (the last fit figure) and figures/loss.png, for a look without TensorBoard."""
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    written = []
    if figures is not None and figures.last is not None:
        figures.last.savefig(out / "fit.png", dpi=110)
        written.append(out / "fit.png")
    if tensorboard_dir is not None and tensorboard_dir.is_dir():
        loss_figure(tensorboard_dir).savefig(out / "loss.png", dpi=110)
        written.append(out / "loss.png")
    return written
