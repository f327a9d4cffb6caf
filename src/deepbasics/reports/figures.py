"""Pictures of a run: the fitted model over its training data, the loss curves and (several classes) the
confusion matrix, written to ``<run dir>/figures/`` and TensorBoard's Images tab at the end of a run (the
fit also every ``figure_every`` epochs while training). Every figure's axes come from its own run alone,
and its title names the run (a sweep's job: its swept values) and, at the end, its monitored result.

matplotlib's constrained layout places each figure once; a fit figure drawn again (while training, or for
each job of a stacked group on the same data) redraws only what changed over that layout (blitting)."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

LOSS_CURVES = {"train/loss": "-", "val/loss": "o--", "train/optimum_loss": "g:"}  # tag -> line style
SIZE = (5.5, 4.2)


def _figure() -> Figure:
    fig = Figure(figsize=SIZE, dpi=100, layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.9))  # the top tenth: the title
    FigureCanvasAgg(fig)
    return fig


def _title(fig: Figure, text: str = "", animated: bool = False):
    return fig.text(0.02, 0.98, text, va="top", fontsize=9, wrap=True, animated=animated)


def image_of(fig: Figure) -> np.ndarray:
    """The figure as an RGB image (height, width, 3)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


class FitPlot:
    """The fit figure over training points (x, y), whose range sets the axes: the decision boundary (2
    features, binary or several classes), the fitted sigmoid (1 feature, classifier) or line (1 feature,
    regression; with the least-squares line when there is one). ``shown``: False for data no figure shows."""

    def __init__(self, module, x: torch.Tensor, y: torch.Tensor):
        x, y = x.detach().cpu(), y.detach().cpu()[:, 0]
        self.classes = getattr(module, "num_classes", 1)
        self.width, classifier = x.shape[1], module.is_classifier
        self.shown = self.width == 1 or (self.width == 2 and classifier)
        if not self.shown:
            return
        self.fig = _figure()
        ax = self.ax = self.fig.subplots()
        if self.width == 2:
            lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
            self.g0, self.g1 = torch.meshgrid(
                torch.linspace(lo[0], hi[0], 120), torch.linspace(lo[1], hi[1], 120), indexing="ij"
            )
            self.grid = torch.stack([self.g0.flatten(), self.g1.flatten()], 1)
            extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
            if self.classes > 1:  # each point of the plane coloured by its most probable class
                from matplotlib.colors import ListedColormap

                colours = [f"C{i}" for i in range(self.classes)]
                cmap, limits, alpha = ListedColormap(colours), (-0.5, self.classes - 0.5), 0.35
                labels = [(c, "o", colours[c], f"class {c}") for c in range(self.classes)]
            else:
                cmap, limits, alpha = "RdBu_r", (0, 1), 0.6
                labels = [(0, "o", "tab:blue", "y = 0"), (1, "s", "tab:red", "y = 1")]
            self.shade = ax.imshow(
                np.zeros((120, 120)),
                origin="lower",
                extent=extent,
                aspect="auto",
                cmap=cmap,
                vmin=limits[0],
                vmax=limits[1],
                alpha=alpha,
                interpolation="nearest",
                animated=True,
            )
            if self.classes == 1:
                self.fig.colorbar(self.shade, ax=ax, label="P(y = 1)")
            self.points = [
                (c, ax.scatter([], [], marker=m, c=colour, edgecolors="k", label=name, animated=True))
                for c, m, colour, name in labels
            ]
            ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="x1", ylabel="x2")
        else:
            span = float(x.max() - x.min()) or 1.0
            self.line = torch.linspace(float(x.min()) - 0.1 * span, float(x.max()) + 0.1 * span, 300).reshape(-1, 1)
            self.model = ax.plot([], [], "k-", label="model", animated=True)[0]
            self.best = ax.plot([], [], "g--", label="least squares", animated=True)[0] if not classifier else None
            self.data = ax.scatter([], [], c="tab:red", edgecolors="k", zorder=3, label="data", animated=True)
            margin = 0.15 * float(y.max() - y.min()) or 1.0
            ylim = (-0.05, 1.05) if classifier else (float(y.min()) - margin, float(y.max()) + margin)
            ax.set(
                xlim=(float(self.line[0, 0]), float(self.line[-1, 0])),
                ylim=ylim,
                xlabel="x",
                ylabel="P(y = 1)" if classifier else "y",
            )
        self.title, self.background = _placed(self.fig)

    def render(self, module, x, y, epoch: int, optimum: dict | None = None, title: str = "") -> np.ndarray:
        """The fit of ``module`` (anything with ``predictions`` and ``__call__``) after ``epoch`` epochs."""
        x, y, ax = x.detach().cpu(), y.detach().cpu()[:, 0], self.ax
        drawn, removed = [], []
        with torch.no_grad():
            if self.width == 2:
                probabilities = module.predictions(module(self.grid.to(module.device))).cpu()
                if self.classes > 1:  # the winning class, and the 0.5 and 0.9 lines of its probability
                    best, which = probabilities.max(dim=1)
                    shading, surface, levels, style = which, best, [0.5, 0.9], {"linewidths": 0.6, "alpha": 0.5}
                else:
                    shading = surface = probabilities[:, 0]
                    levels, style = [0.5], {"linewidths": 1.5}
                self.shade.set_data(shading.reshape(self.g0.shape).T.numpy())
                lines = ax.contour(
                    self.g0.numpy(),
                    self.g1.numpy(),
                    surface.reshape(self.g0.shape).numpy(),
                    levels=levels,
                    colors="k",
                    **style,
                )
                for label, points in self.points:
                    points.set_offsets(x[y == label].numpy().reshape(-1, 2))
                drawn += [self.shade, lines, *(points for _, points in self.points)]
                removed.append(lines)
            else:
                values = module.predictions(module(self.line.to(module.device)))[:, 0].cpu()
                self.model.set_data(self.line[:, 0].numpy(), values.numpy())
                self.data.set_offsets(np.column_stack([x[:, 0].numpy(), y.numpy()]))
                drawn += [self.model, self.data]
                if self.best is not None and optimum and "weight" in optimum:
                    self.best.set_data(
                        self.line[:, 0].numpy(), optimum["weight"][0] * self.line[:, 0].numpy() + optimum["bias"]
                    )
                    drawn.append(self.best)
        return _blit(self.fig, self.background, self.title, " · ".join(t for t in (title, f"epoch {epoch}") if t),
                     drawn, removed)  # fmt: skip


def _placed(fig: Figure) -> tuple:
    """A figure laid out once (constrained layout), its title's text and its background: every render then
    draws only its own artists over that layout (matplotlib's blitting)."""
    fig.axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize="small", frameon=False)
    title = _title(fig, animated=True)
    fig.canvas.draw()
    fig.set_layout_engine("none")
    return title, fig.canvas.copy_from_bbox(fig.bbox)


def _blit(fig: Figure, background, title, text: str, drawn: list, removed: list = ()) -> np.ndarray:
    fig.canvas.restore_region(background)
    title.set_text(text)
    for artist in drawn:
        fig.axes[0].draw_artist(artist)
    fig.draw_artist(title)
    for artist in removed:
        artist.remove()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def loss_axes(curves: dict[str, list[tuple[int, float]]]) -> tuple:
    """A run's loss axes from its own curves: (tags, x limits, y scale, y limits). A log axis when every
    loss is positive (a fall over decades reads as one), its limits snapped out to 1, 2 or 5 times a power of
    ten, so that runs of close results share one layout; otherwise linear."""
    values = [p[1] for points in curves.values() for p in points if math.isfinite(p[1])]
    last = max((p[0] for points in curves.values() for p in points), default=0) or 1
    tags, xlim = tuple(tag for tag in LOSS_CURVES if curves.get(tag)), (-0.02 * last, 1.02 * last)
    if not values or min(values) <= 0:
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        return tags, xlim, "linear", (low - 0.05 * (high - low or 1), high + 0.05 * (high - low or 1))
    steps = [m * 10.0**e for e in range(math.floor(math.log10(min(values))), math.ceil(math.log10(max(values))) + 2)
             for m in (1, 2, 5)]  # fmt: skip
    low, high = max(s for s in steps if s <= min(values) * (1 + 1e-12)), min(s for s in steps if s > max(values))
    return tags, xlim, "log", (low, high)


class LossPlot:
    """train/val loss (and the optimum's) against epochs, on ``loss_axes``; laid out once per axes."""

    def __init__(self, axes: tuple):
        tags, xlim, scale, ylim = axes
        self.fig = _figure()
        ax = self.fig.subplots()
        self.lines = {tag: ax.plot([], [], LOSS_CURVES[tag], label=tag, animated=True)[0] for tag in tags}
        ax.set(xlim=xlim, yscale=scale, ylim=ylim, xlabel="epoch", ylabel="loss")
        if scale == "log":
            label_log_axis(ax.yaxis, *ylim)
        self.title, self.background = _placed(self.fig)

    def render(self, curves: dict[str, list[tuple[int, float]]], title: str = "") -> np.ndarray:
        for tag, line in self.lines.items():
            line.set_data([p[0] for p in curves[tag]], [p[1] for p in curves[tag]])
        return _blit(self.fig, self.background, self.title, title, list(self.lines.values()))


def label_log_axis(axis, low: float, high: float) -> None:
    """A log axis that reads: within three decades, labels at 1, 2 and 5 of each, written plainly (0.005,
    not 5x10^-3); over more, matplotlib's decades."""
    if high / low > 1000:
        return
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def confusion_figure(module, x: torch.Tensor, y: torch.Tensor, split: str) -> Figure:
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
    ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted class", ylabel="true class")
    _title(fig, f"confusion matrix, {split} ({len(y)} rows)")
    return fig


def png(image: np.ndarray) -> bytes:
    """An RGB image as PNG bytes, encoded once for the file and TensorBoard, at zlib's fastest level: these
    flat-coloured figures compress well at any level, and encoding is most of a figure's cost."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="png", compress_level=1)
    return out.getvalue()


@contextlib.contextmanager
def event_writer(logger):
    """The event writer of a TensorBoardLogger. Lightning closes it when fit ends; the end phase's events
    (figures, the HParams tab) then go into a file of their own in the run directory, read with the others."""
    if logger.experiment.file_writer is not None:
        yield logger.experiment.file_writer
        return
    from torch.utils.tensorboard.writer import FileWriter

    writer = FileWriter(logger.log_dir)
    try:
        yield writer
    finally:
        writer.close()


def log_image(loggers, tag: str, image: np.ndarray, encoded: bytes, step: int) -> None:
    """An encoded image into every TensorBoard logger (the Images tab), without encoding it again."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    for logger in loggers:
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            picture = Summary.Image(
                height=image.shape[0], width=image.shape[1], colorspace=3, encoded_image_string=encoded
            )
            with event_writer(logger) as writer:
                writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)


def save_figures(run_dir: Path, module, train: tuple | None, loggers, step: int, epoch: int, optimum=None,
                 curves: dict | None = None, evaluated: tuple | None = None, layouts: dict | None = None,
                 title: str = "") -> None:  # fmt: skip
    """The end of a run's pictures, into figures/ and TensorBoard at ``step``: the fit over the training split
    ``train`` = (x, y) when the data offer it, loss.png of ``curves`` and, for several classes, the confusion
    matrix on ``evaluated`` = (split, x, y). ``layouts``: those of a group's runs, shared by runs on the same
    data (a fit) or on the same axes (a loss)."""
    layouts = {} if layouts is None else layouts
    figures = {}
    if train is not None:
        fit = layouts.get(id(train[0])) or layouts.setdefault(id(train[0]), FitPlot(module, *train))
        if fit.shown:
            figures["fit"] = fit.render(module, *train, epoch, optimum, title)
    if curves is not None:
        axes = loss_axes(curves)
        figures["loss"] = (layouts.get(axes) or layouts.setdefault(axes, LossPlot(axes))).render(curves, title)
    if evaluated is not None and getattr(module, "num_classes", None):
        figures["confusion"] = image_of(confusion_figure(module, evaluated[1], evaluated[2], evaluated[0]))
    (run_dir / "figures").mkdir(exist_ok=True)
    for name, image in figures.items():
        encoded = png(image)
        (run_dir / "figures" / f"{name}.png").write_bytes(encoded)
        if name != "loss":  # the loss curves are TensorBoard's own scalars
            log_image(loggers, f"visual/{name}", image, encoded, step)


def curves_from_events(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The loss curves of a run read back from its own TensorBoard events (resumed parts included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    return {tag: [(p.step, p.value) for p in events.Scalars(tag)] for tag in LOSS_CURVES if tag in tags}


def run_title(name: str, values: dict, monitored: tuple[str, float] | None = None) -> str:
    """What a figure's title says of its run: a sweep's job by the values its sweep varies (``lr=0.03,
    seed=1``; ``values``), a run of its own by its experiment ``name``; and its monitored result, if any."""
    title = ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items()) or name
    if monitored is not None and math.isfinite(monitored[1]):
        title += f" · {monitored[0]} {monitored[1]:.4g}"
    return title
