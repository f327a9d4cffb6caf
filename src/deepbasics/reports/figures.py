"""Pictures of a run (its fit, loss curves, confusion matrix) for figures/ and TensorBoard's Images tab, each
on axes from its own run alone. A figure is laid out once; drawing it again blits only what changed."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from PIL import Image
from torchmetrics.functional.classification import multiclass_confusion_matrix

LOSS_CURVES = {"train/loss": "-", "val/loss": "o--", "train/optimum_loss": "g:"}  # tag -> line style


def _figure() -> tuple:
    fig = Figure(figsize=(5.5, 4.2), dpi=100, layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.9))  # the top tenth: the title
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _title(fig: Figure, text: str = "", animated: bool = False):
    return fig.text(0.02, 0.98, text, va="top", fontsize=9, wrap=True, animated=animated)


def _pixels(fig: Figure) -> np.ndarray:
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


class _Blitted:
    """A figure laid out once (constrained layout): every render blits only its own artists over that layout."""

    def _place(self) -> None:
        self.fig.axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize="small", frameon=False)
        self.title = _title(self.fig, animated=True)
        self.fig.canvas.draw()
        self.fig.set_layout_engine("none")
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def _blit(self, text: str, drawn: list) -> np.ndarray:
        self.fig.canvas.restore_region(self.background)
        self.title.set_text(text)
        for artist in drawn:
            self.fig.axes[0].draw_artist(artist)
        self.fig.draw_artist(self.title)
        return _pixels(self.fig)


def _snapped(low: float, high: float) -> tuple[float, float]:
    """low..high widened to multiples of a 1, 2 or 5 step near an eighth of the span: close ranges (a sweep's
    seeds) get one pair of limits, so that their figures share one layout."""
    low, high = float(low), float(high)
    eighth, power = (high - low or 1.0) / 8, 10.0 ** math.floor(math.log10((high - low or 1.0) / 8))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= eighth)
    return math.floor(low / step) * step, max(math.ceil(high / step), math.floor(low / step) + 1) * step


def fit_axes(module, x: torch.Tensor, y: torch.Tensor) -> tuple | None:
    """(features, classes, classifier, x limits, y limits) of the fit over training points (x, y): decision regions
    (2 features, a classifier), a sigmoid or a line (1 feature); None for data no figure shows."""
    x, y = x.detach().cpu().double(), y.detach().cpu().double()[:, 0]  # double: a margin kept far from zero
    width, classifier, classes = x.shape[1], module.is_classifier, getattr(module, "num_classes", 1)
    if width == 2 and classifier:
        return width, classes, classifier, *(_snapped(x[:, i].min() - 0.5, x[:, i].max() + 0.5) for i in (0, 1))
    if width != 1:
        return None
    span, margin = float(x.max() - x.min()) or 1.0, float(y.max() - y.min()) * 0.15 or 1.0
    ylim = (-0.05, 1.05) if classifier else _snapped(y.min() - margin, y.max() + margin)
    return width, classes, classifier, _snapped(x.min() - 0.1 * span, x.max() + 0.1 * span), ylim


class FitPlot(_Blitted):
    """The fit figure on ``fit_axes``, laid out once for all the runs whose axes these are."""

    def __init__(self, axes: tuple):
        self.width, self.classes, classifier, xlim, ylim = axes
        self.fig, self.ax = _figure()
        ax = self.ax
        if self.width == 2:
            ticks = [torch.linspace(*limits, 120) for limits in (xlim, ylim)]
            self.inputs, self.ticks = torch.cartesian_prod(*ticks), [t.numpy() for t in ticks]
            extent = (*xlim, *ylim)
            if self.classes > 1:  # each point of the plane coloured by its most probable class
                colours = [f"C{i}" for i in range(self.classes)]
                shading = {"cmap": ListedColormap(colours), "vmin": -0.5, "vmax": self.classes - 0.5, "alpha": 0.35}
                self.contours = {"levels": [0.5, 0.9], "linewidths": 0.6, "alpha": 0.5}
                labels = [(c, "o", colours[c], f"class {c}") for c in range(self.classes)]
            else:
                shading = {"cmap": "RdBu_r", "vmin": 0, "vmax": 1, "alpha": 0.6}
                self.contours = {"levels": [0.5], "linewidths": 1.5}
                labels = [(0, "o", "tab:blue", "y = 0"), (1, "s", "tab:red", "y = 1")]
            self.shade = ax.imshow(
                np.zeros((120, 120)), origin="lower", extent=extent, aspect="auto", interpolation="nearest", **shading
            )
            self.shade.set_animated(True)
            if self.classes == 1:
                self.fig.colorbar(self.shade, ax=ax, label="P(y = 1)")
            self.points = {
                c: ax.scatter([], [], marker=m, c=colour, edgecolors="k", label=name, animated=True)
                for c, m, colour, name in labels
            }
            ax.set(xlim=xlim, ylim=ylim, xlabel="x1", ylabel="x2")
        else:
            self.inputs = torch.linspace(*xlim, 300).reshape(-1, 1)
            self.model = ax.plot([], [], "k-", label="model", animated=True)[0]
            self.best = ax.plot([], [], "g--", label="least squares", animated=True)[0] if not classifier else None
            self.data = ax.scatter([], [], c="tab:red", edgecolors="k", zorder=3, label="data", animated=True)
            ax.set(xlim=xlim, ylim=ylim, xlabel="x", ylabel="P(y = 1)" if classifier else "y")
        self._place()

    def render(self, module, x, y, epoch: int, optimum: dict | None = None, title: str = "") -> np.ndarray:
        """The fit of ``module`` (anything with ``predictions`` and ``__call__``) after ``epoch`` epochs."""
        x, y = x.detach().cpu(), y.detach().cpu()[:, 0]
        text = f"{title} · epoch {epoch}" if title else f"epoch {epoch}"
        with torch.no_grad():
            predicted = module.predictions(module(self.inputs.to(module.device))).cpu()
        if self.width == 1:
            xs = self.inputs[:, 0].numpy()
            self.model.set_data(xs, predicted[:, 0].numpy())
            self.data.set_offsets(np.column_stack([x[:, 0].numpy(), y.numpy()]))
            drawn = [self.model, self.data]
            if self.best is not None and optimum and "weight" in optimum:
                self.best.set_data(xs, optimum["weight"][0] * xs + optimum["bias"])
                drawn.append(self.best)
            return self._blit(text, drawn)
        if self.classes > 1:  # the winning class, and the 0.5 and 0.9 lines of its probability
            surface, shading = predicted.max(dim=1)
        else:
            surface = shading = predicted[:, 0]
        self.shade.set_data(shading.reshape(120, 120).T.numpy())
        lines = self.ax.contour(*self.ticks, surface.reshape(120, 120).T.numpy(), colors="k", **self.contours)
        for label, points in self.points.items():
            points.set_offsets(x[y == label].numpy().reshape(-1, 2))
        image = self._blit(text, [self.shade, lines, *self.points.values()])
        lines.remove()  # the next render draws its own
        return image


def loss_axes(curves: dict[str, list[tuple[int, float]]]) -> tuple:
    """(tags, x limits, y scale, y limits) of a run's own curves: log when every loss is positive, else linear."""
    values = [value for points in curves.values() for _, value in points if math.isfinite(value)]
    last = max((step for points in curves.values() for step, _ in points), default=0) or 1
    tags, xlim = tuple(tag for tag in LOSS_CURVES if curves.get(tag)), (-0.02 * last, 1.02 * last)
    if not values or min(values) <= 0:
        return tags, xlim, "linear", _snapped(min(values, default=0.0), max(values, default=1.0))
    # whole decades, so that a sweep's runs of close results share a few layouts (about 180 ms each)
    low, high = (math.floor(math.log10(v) + 1e-12) for v in (min(values), max(values)))
    return tags, xlim, "log", (10.0**low, 10.0 ** (high + 1))


class LossPlot(_Blitted):
    """train/val loss (and the optimum's) against epochs, on ``loss_axes``; laid out once per axes."""

    def __init__(self, axes: tuple):
        tags, xlim, scale, ylim = axes
        self.fig, ax = _figure()
        self.lines = {tag: ax.plot([], [], LOSS_CURVES[tag], label=tag, animated=True)[0] for tag in tags}
        ax.set(xlim=xlim, yscale=scale, ylim=ylim, xlabel="epoch", ylabel="loss")
        if scale == "log":
            label_log_axis(ax.yaxis, *ylim)
        self._place()

    def render(self, curves: dict[str, list[tuple[int, float]]], title: str = "") -> np.ndarray:
        for tag, line in self.lines.items():
            line.set_data([p[0] for p in curves[tag]], [p[1] for p in curves[tag]])
        return self._blit(title, list(self.lines.values()))


def label_log_axis(axis, low: float, high: float) -> None:
    """Within three decades, a log axis labelled at 1, 2 and 5 of each, written plainly (0.005, not 5x10^-3)."""
    if high / low > 1000:
        return
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def confusion_image(module, split: str, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The confusion matrix of a multi-class classifier on one split: counts, true class by row."""
    with torch.no_grad():
        predicted = module.predictions(module(x.to(module.device))).argmax(dim=1).cpu()
    classes = module.num_classes
    matrix = multiclass_confusion_matrix(predicted, y[:, 0].long().cpu(), num_classes=classes).numpy()
    fig, ax = _figure()
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "k")
    ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted class", ylabel="true class")
    _title(fig, f"confusion matrix, {split} ({len(y)} rows)")
    fig.canvas.draw()
    return _pixels(fig)


def event_writer(logger):
    """A TensorBoardLogger's event writer; once Lightning closed it at the end of fit, a file of its own."""
    if logger.experiment.file_writer is not None:
        return contextlib.nullcontext(logger.experiment.file_writer)
    from torch.utils.tensorboard.writer import FileWriter

    return contextlib.closing(FileWriter(logger.log_dir))


def log_image(loggers, tag: str, image: np.ndarray, encoded: bytes, step: int) -> None:
    """An encoded image into every TensorBoard logger (the Images tab), without encoding it again."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    picture = Summary.Image(height=image.shape[0], width=image.shape[1], colorspace=3, encoded_image_string=encoded)
    for logger in loggers:
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            with event_writer(logger) as writer:
                writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)


def save_figures(
    run_dir: Path, module, train, loggers, step: int, epoch: int, optimum, curves, evaluated, layouts, title
) -> None:
    """The end of a run's pictures: the fit over ``train`` = (x, y), loss.png of ``curves`` and, for several
    classes, the confusion matrix on ``evaluated`` = (split, x, y). ``layouts``: shared by a group's runs."""
    layouts, figures = {} if layouts is None else layouts, {}  # a group's: each layout drawn once, then shared
    axes = fit_axes(module, *train) if train is not None else None
    if axes is not None:
        figures["fit"] = (layouts.get(axes) or FitPlot(axes)).render(module, *train, epoch, optimum, title)
    if curves is not None:
        axes = loss_axes(curves)
        layouts[axes] = layouts.get(axes) or LossPlot(axes)
        figures["loss"] = layouts[axes].render(curves, title)
    if evaluated is not None and getattr(module, "num_classes", None):
        figures["confusion"] = confusion_image(module, *evaluated)
    (run_dir / "figures").mkdir(exist_ok=True)
    for name, image in figures.items():
        path = run_dir / "figures" / f"{name}.png"  # PNG at zlib's fastest level: encoding is most of a figure's cost
        Image.fromarray(image).save(path, compress_level=1)  # flat colours compress
        if name != "loss":  # the loss curves are TensorBoard's own scalars
            log_image(loggers, f"visual/{name}", image, path.read_bytes(), step)


def curves_from_events(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The loss curves of a run read back from its own TensorBoard events (resumed parts included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    return {tag: [(p.step, p.value) for p in events.Scalars(tag)] for tag in LOSS_CURVES if tag in tags}


def run_title(name: str, values: dict, monitored: tuple[str, float] | None = None) -> str:
    """A figure's title: the swept ``values`` (``lr=0.03, seed=1``) or the experiment's ``name``, and the result."""
    title = ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items()) or name
    if monitored is not None and math.isfinite(monitored[1]):
        title += f" · {monitored[0]} {monitored[1]:.4g}"
    return title
