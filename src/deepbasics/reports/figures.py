"""Pictures of a run: the fitted model over its training data, and the loss curve. The fit goes into
TensorBoard every ``figure_every`` epochs (0: never during training; the ``run.callbacks.Figures`` callback)
and, after training, at the last epoch, which is also written with the loss curve as PNG files to
``<run dir>/figures/``. Each figure is
rasterised once (the expensive part) and that image goes to both places."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure


def fit_figure(module, x: torch.Tensor, y: torch.Tensor, step: int, optimum: dict | None = None):
    """Decision boundary (2 features, classifier), fitted sigmoid (1 feature, classifier) or fitted line
    (1 feature, regression) over the points; None for wider inputs. ``module`` is the LightningModule: its
    ``predictions`` are what a user sees (probabilities or values)."""
    classifier = module.is_classifier
    x, y = x.detach().cpu(), y.detach().cpu()[:, 0]
    width = x.shape[1]
    if width > 2 or (width == 2 and not classifier):
        return None
    fig = _figure()
    ax = fig.subplots()
    with torch.no_grad():
        if width == 2:
            lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
            g0, g1 = torch.meshgrid(torch.linspace(lo[0], hi[0], 120), torch.linspace(lo[1], hi[1], 120), indexing="ij")
            grid = torch.stack([g0.flatten(), g1.flatten()], 1)
            probabilities = module.predictions(module(grid))
            extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
            if probabilities.shape[1] > 1:  # several classes: each point of the plane coloured by its class
                _class_regions(fig, ax, probabilities, g0.shape, extent, x, y)
                _heading(ax, f"epoch {step}")
                return fig
            p = probabilities.reshape(g0.shape)
            shade = ax.imshow(p.T.numpy(), origin="lower", extent=extent, aspect="auto", cmap="RdBu_r", vmin=0, vmax=1,
                              alpha=0.6)  # fmt: skip
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
            ax.plot(line[:, 0], module.predictions(module(line))[:, 0], "k-", label="model")
            if optimum and "weight" in optimum and not classifier:
                best = optimum["weight"][0] * line[:, 0] + optimum["bias"]
                ax.plot(line[:, 0], best, "g--", label=f"least squares ({optimum['loss']:.4g})")
            ax.scatter(x[:, 0], y, c="tab:red", edgecolors="k", zorder=3, label="data")
            ax.set_xlabel("x")
            ax.set_ylabel("P(y = 1)" if classifier else "y")
    _heading(ax, f"epoch {step}")
    return fig


def _class_regions(fig, ax, probabilities, shape, extent, x, y) -> None:
    """Decision regions of a multi-class classifier (the most probable class, shaded by how sure it is)
    with the training points in their class colours."""
    from matplotlib.colors import ListedColormap

    classes = probabilities.shape[1]
    colours = [f"C{i}" for i in range(classes)]
    best, which = probabilities.max(dim=1)
    regions = ListedColormap(colours)
    ax.imshow(which.reshape(shape).T.numpy(), origin="lower", extent=extent, aspect="auto", cmap=regions,
              vmin=-0.5, vmax=classes - 0.5, alpha=0.35, interpolation="nearest")  # fmt: skip
    g0, g1 = torch.meshgrid(
        torch.linspace(extent[0], extent[1], shape[0]), torch.linspace(extent[2], extent[3], shape[1]), indexing="ij"
    )
    # how sure it is: the 0.5 and 0.9 lines of the winning class's probability
    ax.contour(g0.numpy(), g1.numpy(), best.reshape(shape).numpy(), levels=[0.5, 0.9], colors="k", linewidths=0.6,
               alpha=0.5)  # fmt: skip
    for label in range(classes):
        points = x[y == label]
        ax.scatter(points[:, 0], points[:, 1], c=colours[label], edgecolors="k", label=f"class {label}")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")


def confusion_figure(module, x: torch.Tensor, y: torch.Tensor, split: str):
    """The confusion matrix of a multi-class classifier on one split: counts, true class by row."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    with torch.no_grad():
        predicted = module.predictions(module(x.to(module.device))).argmax(dim=1).cpu()
    classes = module.num_classes
    matrix = multiclass_confusion_matrix(predicted, y[:, 0].long().cpu(), num_classes=classes).numpy()
    fig = _figure()
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "k")
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, {split} ({len(y)} rows)", loc="left")
    return fig


def loss_figure(tensorboard_dir: Path):
    """train/val loss against epochs, read back from the run's own TensorBoard events (resumed parts included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    fig = _figure()
    ax = fig.subplots()
    for tag, style in (("train/loss", "-"), ("val/loss", "o--"), ("optimum/loss", "g:")):
        if tag in tags:
            points = events.Scalars(tag)
            ax.plot([p.step for p in points], [p.value for p in points], style, label=tag)
    ax.set_xlabel("epoch (full-batch steps)")
    ax.set_ylabel("loss")
    if all(p.value > 0 for p in events.Scalars("train/loss")):
        ax.set_yscale("log")
    _heading(ax, "loss")
    return fig


def _heading(ax, title: str) -> None:
    # Title left, legend right, both above the axes: nothing covers the data, and no "best" placement search.
    ax.set_title(title, loc="left")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize="small", frameon=False, borderaxespad=0.2)


def _figure() -> Figure:
    # Fixed margins: a layout engine would cost more than the drawing.
    fig = Figure(figsize=(5.5, 4.2), dpi=100)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.9)
    return fig


def rasterise(fig: Figure) -> np.ndarray:
    """The figure as an RGBA image (height, width, 4), rendered once."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def draw_fit(module, x: torch.Tensor, y: torch.Tensor, step: int, loggers, optimum: dict | None) -> np.ndarray | None:
    """The fit figure at ``step`` over the training data (x, y), into every TensorBoard logger; the image,
    or None for data no figure shows."""
    fig = fit_figure(module, x.to(module.device), y, step, optimum)
    if fig is None:
        return None
    image = rasterise(fig)
    for logger in loggers:
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            logger.experiment.add_image("fit", image[..., :3], global_step=step, dataformats="HWC")
    return image


def save_figures(
    run_dir: Path, module, x, y, step: int, loggers, optimum: dict | None, tensorboard: Path | None, evaluated=None
):
    """After training: the last epoch's fit (TensorBoard and figures/fit.png), figures/loss.png and, for a
    multi-class classifier, the confusion matrix on ``evaluated`` = (split, x, y) (TensorBoard and
    figures/confusion.png)."""
    from matplotlib.image import imsave

    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    image = draw_fit(module, x, y, step, loggers, optimum)
    if image is not None:
        imsave(out / "fit.png", image)
    if tensorboard is not None and tensorboard.is_dir():
        imsave(out / "loss.png", rasterise(loss_figure(tensorboard)))
    if evaluated is not None and getattr(module, "num_classes", None):
        image = rasterise(confusion_figure(module, evaluated[1], evaluated[2], evaluated[0]))
        imsave(out / "confusion.png", image)
        for logger in loggers:
            if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
                logger.experiment.add_image("confusion", image[..., :3], global_step=step, dataformats="HWC")
