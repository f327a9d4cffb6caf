"""Pictures of a run: the fitted model over its training data, and the loss curve. The fit goes into
TensorBoard every ``figure_every`` epochs (0: never during training; the ``run.callbacks.Figures`` callback)
and, after training, at the last epoch, which is also written with the loss curve as PNG files to
``<run dir>/figures/``. A figure's layout is drawn once (for one run, or for every run of a stacked group)
and each picture only draws its data over it; each picture is encoded to PNG once, for both places."""

from __future__ import annotations

import io
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from deepbasics.reports.events import event_writer


class FitPlot:
    """The fit figure of one run or of a whole group of runs: decision boundary (2 features, classifier),
    fitted sigmoid (1 feature, classifier) or fitted line (1 feature, regression) over the training points.
    Axes, colour bar and legend are drawn once for the data of every run given (``xs``, ``ys``); a run's
    own shading, boundary, points and title are then drawn over that background (matplotlib's blitting),
    so a group of runs costs one layout, not one per run. ``shown`` is False for data no figure shows."""

    def __init__(self, classifier: bool, classes: int, xs: list[torch.Tensor], ys: list[torch.Tensor]):
        x = torch.cat([v.detach().cpu() for v in xs])
        y = torch.cat([v.detach().cpu() for v in ys])[:, 0]
        self.classifier, self.classes, self.width = classifier, classes, x.shape[1]
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
            blank = np.zeros(self.g0.shape)
            if classes > 1:  # several classes: each point of the plane coloured by its most probable class
                from matplotlib.colors import ListedColormap

                self.colours = [f"C{i}" for i in range(classes)]
                self.shade = ax.imshow(blank, origin="lower", extent=extent, aspect="auto", animated=True,
                                       cmap=ListedColormap(self.colours), vmin=-0.5, vmax=classes - 0.5, alpha=0.35,
                                       interpolation="nearest")  # fmt: skip
                labels = [(label, "o", self.colours[label], f"class {label}") for label in range(classes)]
            else:
                self.shade = ax.imshow(blank, origin="lower", extent=extent, aspect="auto", cmap="RdBu_r", vmin=0,
                                       vmax=1, alpha=0.6, animated=True)  # fmt: skip
                self.fig.colorbar(self.shade, ax=ax, label="P(y = 1)")
                labels = [(0, "o", "tab:blue", "y = 0"), (1, "s", "tab:red", "y = 1")]
            self.points = [
                (label, ax.scatter([], [], marker=marker, c=colour, edgecolors="k", label=name, animated=True))
                for label, marker, colour, name in labels
            ]
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            _heading(ax, "")
        else:
            span = float(x.max() - x.min())
            self.line = torch.linspace(float(x.min()) - 0.1 * span, float(x.max()) + 0.1 * span, 300).reshape(-1, 1)
            self.model = ax.plot([], [], "k-", label="model", animated=True)[0]
            self.best = ax.plot([], [], "g--", animated=True)[0]
            self.data = ax.scatter([], [], c="tab:red", edgecolors="k", zorder=3, label="data", animated=True)
            ax.set_xlim(float(self.line[0, 0]), float(self.line[-1, 0]))
            if classifier:
                ax.set_ylim(-0.05, 1.05)
            else:
                margin = 0.15 * float(y.max() - y.min()) or 1.0
                ax.set_ylim(float(y.min()) - margin, float(y.max()) + margin)
            ax.set_xlabel("x")
            ax.set_ylabel("P(y = 1)" if classifier else "y")
        self.title = ax.set_title("", loc="left", animated=True)
        self.canvas = _canvas(self.fig)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)
        if self.width == 2:
            # The shading goes straight into the canvas's pixels inside the axes (each pixel takes its grid
            # cell's colour, as imshow's nearest scaling does): matplotlib's image pipeline would cost more
            # than everything else in the figure.
            box = ax.get_window_extent()
            height = self.canvas.get_width_height()[1]
            x0, x1 = round(box.x0), round(box.x1)
            top, bottom = height - round(box.y1), height - round(box.y0)  # rows count from the top
            cells = self.g0.shape
            self.box = (slice(top, bottom), slice(x0, x1))
            self.cols = ((np.arange(x0, x1) + 0.5 - box.x0) / box.width * cells[0]).astype(int).clip(0, cells[0] - 1)
            self.rows = ((height - np.arange(top, bottom) - 0.5 - box.y0) / box.height * cells[1]).astype(int)
            self.rows = self.rows.clip(0, cells[1] - 1)

    def _tinted(self, values: np.ndarray) -> np.ndarray:
        """``values`` through the shading's colour map and translucency, over white, as RGB bytes."""
        colours = self.shade.to_rgba(values, alpha=self.shade.get_alpha())  # (H, W, 4) floats
        alpha = colours[..., 3:]
        return (255 * (alpha * colours[..., :3] + (1 - alpha))).astype(np.uint8)

    def render(self, module, x: torch.Tensor, y: torch.Tensor, epoch: int, optimum: dict | None = None) -> np.ndarray:
        """One run's fit after ``epoch`` tutorial epochs as an RGB image; ``module`` is the LightningModule (or
        anything with its ``predictions`` and ``__call__``): its predictions are what a user sees."""
        x, y = x.detach().cpu(), y.detach().cpu()[:, 0]
        ax, device = self.ax, module.device
        self.canvas.restore_region(self.background)
        drawn, removed = [], []
        with torch.no_grad():
            if self.width == 2:
                probabilities = module.predictions(module(self.grid.to(device))).cpu()
                if self.classes > 1:
                    best, which = probabilities.max(dim=1)
                    shading = self._tinted(which.reshape(self.g0.shape).T.numpy())
                    # how sure it is: the 0.5 and 0.9 lines of the winning class's probability
                    lines = ax.contour(self.g0.numpy(), self.g1.numpy(), best.reshape(self.g0.shape).numpy(),
                                       levels=[0.5, 0.9], colors="k", linewidths=0.6, alpha=0.5)  # fmt: skip
                else:
                    p = probabilities.reshape(self.g0.shape)
                    shading = self._tinted(p.T.numpy())
                    lines = ax.contour(self.g0.numpy(), self.g1.numpy(), p.numpy(), levels=[0.5], colors="k",
                                       linewidths=1.5)  # fmt: skip
                for label, points in self.points:
                    points.set_offsets(x[y == label].numpy().reshape(-1, 2))
                pixels = np.asarray(self.canvas.buffer_rgba())
                pixels[self.box[0], self.box[1], :3] = shading[self.rows][:, self.cols]
                drawn += [*ax.spines.values(), lines, *(points for _, points in self.points)]
                removed.append(lines)
            else:
                self.model.set_data(
                    self.line[:, 0].numpy(), module.predictions(module(self.line.to(device)))[:, 0].cpu()
                )
                self.data.set_offsets(np.column_stack([x[:, 0].numpy(), y.numpy()]))
                drawn += [self.model, self.data]
                if optimum and "weight" in optimum and not self.classifier:
                    self.best.set_data(
                        self.line[:, 0].numpy(), optimum["weight"][0] * self.line[:, 0].numpy() + optimum["bias"]
                    )
                    self.best.set_label(f"least squares ({optimum['loss']:.4g})")
                    drawn.append(self.best)
                else:
                    self.best.set_label("_hidden")
                shown = [a for a in (self.model, self.best, self.data) if not a.get_label().startswith("_")]
                legend = ax.legend(handles=shown, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3,
                                   fontsize="small", frameon=False, borderaxespad=0.2)  # fmt: skip
                legend.set_animated(True)
                drawn.append(legend)
                removed.append(legend)
        self.title.set_text(f"epoch {epoch}")
        for artist in [*drawn, self.title]:
            ax.draw_artist(artist)
        for artist in removed:
            artist.remove()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


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


def curves_from_events(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The loss curves of a run read back from its own TensorBoard events (resumed parts included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deepbasics.reports.events import fast_checksums

    fast_checksums()
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    return {tag: [(p.step, p.value) for p in events.Scalars(tag)] for tag in LOSS_CURVES if tag in tags}


LOSS_CURVES = {"train/loss": "-", "val/loss": "o--", "optimum/loss": "g:"}  # tag -> line style


class LossPlot:
    """train/val loss (and the optimum's) against epochs, for one run or a group of runs drawn on one set of
    axes (limits from all of ``curves_of_runs``; log scale when every loss is positive), run by run."""

    def __init__(self, curves_of_runs: list[dict[str, list[tuple[int, float]]]]):
        points = [p for curves in curves_of_runs for line in curves.values() for p in line if math.isfinite(p[1])]
        self.fig = _figure()
        ax = self.ax = self.fig.subplots()
        tags = [tag for tag in LOSS_CURVES if any(tag in curves for curves in curves_of_runs)]
        self.lines = {tag: ax.plot([], [], LOSS_CURVES[tag], label=tag, animated=True)[0] for tag in tags}
        if points:
            steps, values = [p[0] for p in points], [p[1] for p in points]
            ax.set_xlim(min(steps) - 0.02 * max(steps), 1.02 * max(steps) or 1)
            if min(values) > 0:
                ax.set_yscale("log")
                ax.set_ylim(min(values) / 1.3, max(values) * 1.3)
            else:
                margin = 0.05 * (max(values) - min(values)) or 1.0
                ax.set_ylim(min(values) - margin, max(values) + margin)
        ax.set_xlabel("epoch (full-batch steps)")
        ax.set_ylabel("loss")
        _heading(ax, "loss")
        self.canvas = _canvas(self.fig)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def render(self, curves: dict[str, list[tuple[int, float]]]) -> np.ndarray:
        self.canvas.restore_region(self.background)
        for tag, line in self.lines.items():
            points = curves.get(tag, [])
            line.set_data([p[0] for p in points], [p[1] for p in points])
            self.ax.draw_artist(line)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def _heading(ax, title: str) -> None:
    # Title left, legend right, both above the axes: nothing covers the data, and no "best" placement search.
    ax.set_title(title, loc="left")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize="small", frameon=False, borderaxespad=0.2)


def _figure() -> Figure:
    # Fixed margins: a layout engine would cost more than the drawing.
    fig = Figure(figsize=(5.5, 4.2), dpi=100)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.9)
    return fig


def _canvas(fig: Figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg(fig)


def rasterise(fig: Figure) -> np.ndarray:
    """The figure as an RGB image (height, width, 3), rendered once."""
    canvas = _canvas(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png(image: np.ndarray) -> bytes:
    """An RGB image as PNG bytes, encoded once for both the file and TensorBoard. The fastest zlib level:
    these flat-coloured figures compress well at any level, and encoding is most of a figure's cost."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="png", compress_level=1)
    return out.getvalue()


def log_image(loggers, tag: str, image: np.ndarray, encoded: bytes, step: int) -> None:
    """An encoded image into every TensorBoard logger (the Images tab), without encoding it again."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    for logger in loggers:
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            picture = Summary.Image(
                height=image.shape[0], width=image.shape[1], colorspace=3, encoded_image_string=encoded
            )
            summary = Summary(value=[Summary.Value(tag=tag, image=picture)])
            with event_writer(logger) as writer:
                writer.add_summary(summary, step)


def draw_fit(
    module, x, y, step: int, loggers, optimum: dict | None, plot: FitPlot | None = None, epoch: int | None = None
) -> bytes | None:
    """The fit figure after ``epoch`` tutorial epochs (default: ``step``) over the training data (x, y), into
    every TensorBoard logger at ``step``; the PNG, or None for data no figure shows. ``plot``: a FitPlot to
    draw on (built for these data when None)."""
    plot = plot or FitPlot(module.is_classifier, getattr(module, "num_classes", 1), [x], [y])
    if not plot.shown:
        return None
    image = plot.render(module, x, y, step if epoch is None else epoch, optimum)
    encoded = png(image)
    log_image(loggers, "fit", image, encoded, step)
    return encoded


def save_figures(
    run_dir: Path,
    module,
    x,
    y,
    step: int,
    loggers,
    optimum: dict | None,
    curves: dict | None,
    evaluated=None,
    plots: tuple[FitPlot, LossPlot | None] | None = None,
    epoch: int | None = None,
) -> None:
    """After training: the last epoch's fit (TensorBoard and figures/fit.png), figures/loss.png of
    ``curves`` (none for None) and, for a multi-class classifier, the confusion matrix on ``evaluated`` =
    (split, x, y) (TensorBoard and figures/confusion.png). ``plots``: (fit, loss) plots shared by a group of
    runs; None draws this run's own."""
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    fit, loss = plots or (None, None)
    encoded = draw_fit(module, x, y, step, loggers, optimum, fit, epoch)
    if encoded is not None:
        (out / "fit.png").write_bytes(encoded)
    if curves is not None:
        (out / "loss.png").write_bytes(png((loss or LossPlot([curves])).render(curves)))
    if evaluated is not None and getattr(module, "num_classes", None):
        image = rasterise(confusion_figure(module, evaluated[1], evaluated[2], evaluated[0]))
        encoded = png(image)
        (out / "confusion.png").write_bytes(encoded)
        log_image(loggers, "confusion", image, encoded, step)
