"""Pictures of a run: the fitted model over its training data, and the loss curve. The fit goes into
TensorBoard every ``figure_every`` epochs (0: never during training; the ``run.callbacks.Figures`` callback)
and, after training, at the last epoch, which is also written with the loss curve as PNG files to
``<run dir>/figures/``. One axis policy, whatever launcher ran the job: every figure's axes come from its
own run alone (the fit: its training data; the loss: its own curves, on a log axis snapped to 1-2-5 steps
when every loss is positive), and its title names the run (a sweep's job: its swept values) and, at the
end, its monitored result. A layout is drawn once and each picture only draws its data over it; runs whose
axes coincide (a stacked group's jobs on the same data) share one (``Layouts``). Each picture is encoded
to PNG once, for both places."""

from __future__ import annotations

import io
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from deepbasics.config.schema import FIGURE_TAGS, OPTIMUM_LOSS
from deepbasics.reports.events import event_writer


class FitPlot:
    """The fit figure of a run: decision boundary (2 features, classifier), fitted sigmoid (1 feature,
    classifier) or fitted line (1 feature, regression) over the training points (x, y), whose range sets
    the axes. Axes, colour bar and legend are drawn once; a run's own shading, boundary, points and title
    are then drawn over that background (matplotlib's blitting), so runs on the same data (``Layouts``)
    cost one layout, not one each. ``shown`` is False for data no figure shows."""

    def __init__(self, classifier: bool, classes: int, x: torch.Tensor, y: torch.Tensor):
        x, y = x.detach().cpu(), y.detach().cpu()[:, 0]
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
            _legend_above(ax)
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
        self.title = _title(self.fig)
        self.canvas = _canvas(self.fig)
        _fit_inside(self.fig, self.canvas)
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

    def render(
        self, module, x: torch.Tensor, y: torch.Tensor, epoch: int, optimum: dict | None = None, title: str = ""
    ) -> np.ndarray:
        """One run's fit after ``epoch`` tutorial epochs as an RGB image, headed ``title`` (the run) and the
        epoch; ``module`` is the LightningModule (or anything with its ``predictions`` and ``__call__``):
        its predictions are what a user sees."""
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
        _set_title(self.title, self.canvas, " · ".join(t for t in (title, f"epoch {epoch}") if t))
        for artist in drawn:
            ax.draw_artist(artist)
        self.fig.draw_artist(self.title)
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
    canvas = _canvas(fig)
    _set_title(_title(fig), canvas, f"confusion matrix, {split} ({len(y)} rows)", animated=False)
    _fit_inside(fig, canvas)
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


LOSS_CURVES = {"train/loss": "-", "val/loss": "o--", OPTIMUM_LOSS: "g:"}  # tag -> line style


def loss_axes(curves: dict[str, list[tuple[int, float]]]) -> tuple:
    """The loss figure's axes for a run's own curves: (tags, x limits, y scale, y limits). Log scale when
    every loss is positive (a fall over decades reads as one), its limits snapped outwards to 1-2-5 steps;
    otherwise linear, snapped to round ticks. Runs whose curves give the same axes share a layout."""
    from matplotlib.ticker import MaxNLocator

    tags = tuple(tag for tag in LOSS_CURVES if tag in curves)
    points = [p for line in curves.values() for p in line if math.isfinite(p[1])]
    if not points:
        return tags, (0.0, 1.0), "linear", (0.0, 1.0)
    last = max(p[0] for p in points) or 1
    xlim = (-0.02 * last, 1.02 * last)
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    if low > 0:
        bottom, top = _step_125(low, down=True), _step_125(high, down=False)
        if top <= bottom:  # a flat curve on a step: one step up, so the axis has a height
            top = _step_125(bottom * 1.001, down=False)
        return tags, xlim, "log", (bottom, top)
    ticks = MaxNLocator(nbins=6).tick_values(low, high if high > low else low + 1)
    return tags, xlim, "linear", (float(ticks[0]), float(ticks[-1]))


def _step_125(value: float, down: bool) -> float:
    """The nearest of 1, 2, 5 times a power of ten below (``down``) or above ``value`` (> 0)."""
    decade = 10.0 ** math.floor(math.log10(value))
    steps = [decade * m for m in (1, 2, 5, 10)]
    if down:
        return max(s for s in steps if s <= value * (1 + 1e-12))
    return min(s for s in steps if s >= value * (1 - 1e-12))


class LossPlot:
    """train/val loss (and the optimum's) against epochs, on the axes ``loss_axes`` gives; drawn once per
    axes and each run's curves over that layout."""

    def __init__(self, axes: tuple):
        tags, xlim, scale, ylim = axes
        self.fig = _figure()
        ax = self.ax = self.fig.subplots()
        self.lines = {tag: ax.plot([], [], LOSS_CURVES[tag], label=tag, animated=True)[0] for tag in tags}
        ax.set_xlim(*xlim)
        ax.set_yscale(scale)
        ax.set_ylim(*ylim)
        if scale == "log":
            label_log_axis(ax.yaxis, *ylim)
        ax.set_xlabel("epoch (full-batch steps)")
        ax.set_ylabel("loss")
        _legend_above(ax)
        self.title = _title(self.fig)
        self.canvas = _canvas(self.fig)
        _fit_inside(self.fig, self.canvas)
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def render(self, curves: dict[str, list[tuple[int, float]]], title: str = "") -> np.ndarray:
        self.canvas.restore_region(self.background)
        for tag, line in self.lines.items():
            points = curves.get(tag, [])
            line.set_data([p[0] for p in points], [p[1] for p in points])
            self.ax.draw_artist(line)
        _set_title(self.title, self.canvas, title)
        self.fig.draw_artist(self.title)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def label_log_axis(axis, low: float, high: float) -> None:
    """A log axis that reads: within three decades, labels at 1, 2 and 5 of each, written plainly (0.005,
    not 5x10^-3); over more, matplotlib's decades."""
    if high / low > 1000:
        return
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


class Layouts:
    """Figure layouts by their axes, so that runs drawn in one process (a stacked group's jobs) share the
    layouts whose axes coincide and draw their own otherwise: the axes each would get alone."""

    def __init__(self):
        self.fits: dict[tuple, FitPlot] = {}
        self.losses: dict[tuple, LossPlot] = {}

    def fit(self, classifier: bool, classes: int, x: torch.Tensor, y: torch.Tensor) -> FitPlot:
        x, y = x.detach().cpu(), y.detach().cpu()
        key = (classifier, classes, tuple(x.shape[1:]), *x.min(0).values.tolist(), *x.max(0).values.tolist())
        key += (float(y.min()), float(y.max()))
        if key not in self.fits:
            self.fits[key] = FitPlot(classifier, classes, x, y)
        return self.fits[key]

    def loss(self, curves: dict[str, list[tuple[int, float]]]) -> LossPlot:
        axes = loss_axes(curves)
        if axes not in self.losses:
            self.losses[axes] = LossPlot(axes)
        return self.losses[axes]


def _legend_above(ax) -> None:
    # The legend right above the axes and the title in a row of its own above it: nothing covers the data
    # or the title, and no "best" placement search.
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, fontsize="small", frameon=False, borderaxespad=0.2)


def _title(fig: Figure):
    return fig.text(0.015, 0.985, "", ha="left", va="top", fontsize=10, animated=True)


def _set_title(text, canvas, value: str, animated: bool = True) -> None:
    """Set a title that fits the figure's width: smaller type for a long one, then cut with an ellipsis."""
    text.set_animated(animated)
    text.set_text(value)
    text.set_fontsize(10)
    width = canvas.get_width_height()[0] * 0.97
    renderer = canvas.get_renderer()
    size = 10
    while text.get_window_extent(renderer).width > width and size > 7:
        size -= 1
        text.set_fontsize(size)
    while text.get_window_extent(renderer).width > width and len(value) > 4:
        value = value[:-2]
        text.set_text(value.rstrip(" ·,") + "…")


def _fit_inside(fig: Figure, canvas, pad: float = 4.0) -> None:
    """Draw the layout; if a label or tick label reaches past the figure's edge (a wide tick label pushing
    the y label out, say), move and shrink the axes until everything lies ``pad`` pixels inside, and draw
    again (twice at most: new positions can bring new tick labels). Fixed margins serve most figures
    without a layout engine's cost; this catches the rest."""
    canvas.draw()
    width, height = canvas.get_width_height()
    for _ in range(3):
        box = fig.get_tightbbox(canvas.get_renderer()).transformed(fig.dpi_scale_trans)  # pixels
        left, right = max(0.0, pad - box.x0), max(0.0, box.x1 - width + pad)
        bottom, top = max(0.0, pad - box.y0), max(0.0, box.y1 - height + pad)
        if not (left or right or bottom or top):
            return
        sx, sy = 1 - (left + right) / width, 1 - (bottom + top) / height
        for ax in fig.axes:  # colour bars too: every axes moved and shrunk by the same map
            x0, y0, x1, y1 = ax.get_position().extents
            ax.set_position([left / width + x0 * sx, bottom / height + y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy])
        canvas.draw()


def _figure() -> Figure:
    # Fixed margins: a layout engine would cost more than the drawing.
    fig = Figure(figsize=(5.5, 4.2), dpi=100)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.86)
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
    module,
    x,
    y,
    step: int,
    loggers,
    optimum: dict | None,
    plot: FitPlot | None = None,
    epoch: int | None = None,
    title: str = "",
) -> bytes | None:
    """The fit figure after ``epoch`` tutorial epochs (default: ``step``) over the training data (x, y),
    headed ``title``, into every TensorBoard logger at ``step``; the PNG, or None for data no figure shows.
    ``plot``: a FitPlot to draw on (built for these data when None)."""
    plot = plot or FitPlot(module.is_classifier, getattr(module, "num_classes", 1), x, y)
    if not plot.shown:
        return None
    image = plot.render(module, x, y, step if epoch is None else epoch, optimum, title)
    encoded = png(image)
    log_image(loggers, FIGURE_TAGS["fit"], image, encoded, step)
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
    layouts: Layouts | None = None,
    epoch: int | None = None,
    title: str = "",
) -> None:
    """After training: the last epoch's fit (TensorBoard and figures/fit.png), figures/loss.png of
    ``curves`` (none for None) and, for a multi-class classifier, the confusion matrix on ``evaluated`` =
    (split, x, y) (TensorBoard and figures/confusion.png); fit and loss headed ``title``. ``layouts``:
    those of a group of runs, shared where their axes coincide; None draws this run's own."""
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    layouts = layouts or Layouts()
    fit = layouts.fit(module.is_classifier, getattr(module, "num_classes", 1), x, y)
    encoded = draw_fit(module, x, y, step, loggers, optimum, fit, epoch, title)
    if encoded is not None:
        (out / "fit.png").write_bytes(encoded)
    if curves is not None:
        (out / "loss.png").write_bytes(png(layouts.loss(curves).render(curves, title)))
    if evaluated is not None and getattr(module, "num_classes", None):
        image = rasterise(confusion_figure(module, evaluated[1], evaluated[2], evaluated[0]))
        encoded = png(image)
        (out / "confusion.png").write_bytes(encoded)
        log_image(loggers, FIGURE_TAGS["confusion"], image, encoded, step)


def run_title(cfg, run_dir: Path, monitored: float | None = None) -> str:
    """What a figure's title says of its run: a sweep's job by the values its sweep varies (``lr=0.03,
    seed=1``), a run of its own by its experiment; and its monitored result, once there is one."""
    from omegaconf import OmegaConf

    from deepbasics.config.sweep_dir import swept_keys

    parts = []
    for key in swept_keys(Path(run_dir).parent):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float, str, bool)):
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    title = ", ".join(parts) or str(cfg.get("name", ""))
    if monitored is not None and math.isfinite(monitored):
        title += f" · {cfg.monitor.metric} {monitored:.4g}"
    return title
