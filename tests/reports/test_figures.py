"""The figures read back through matplotlib as they are about to be saved: each figure's axes come from its
own run (log axis for losses over decades, ticks that read), nothing is clipped at the figure's edge, and
the title names the run and its result."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from deepbasics.reports.figures import Layouts, loss_axes, run_title


def inside(fig, canvas, title) -> bool:
    """Whether everything a drawn figure shows (axes, their drawn tick labels and axis labels, legends,
    colour bar, and the run's title) lies within the figure."""
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    boxes = [fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans), title.get_window_extent(renderer)]
    return all(b.x0 >= 0 and b.y0 >= 0 and b.x1 <= width and b.y1 <= height for b in boxes)


def decaying(start: float, end: float, steps: int = 2000) -> dict[str, list[tuple[int, float]]]:
    rate = math.log(start / end) / steps
    return {
        "train/loss": [(s, start * math.exp(-rate * s)) for s in range(0, steps + 1, 100)],
        "val/loss": [(s, 1.1 * start * math.exp(-rate * s)) for s in range(500, steps + 1, 500)],
    }


def test_a_loss_over_decades_is_drawn_on_a_log_axis_whose_ticks_read():
    curves = decaying(0.7, 0.005)
    plot = Layouts().loss(curves)
    plot.render(curves, "lr=0.3, seed=1 · val/loss 0.005205")
    ax = plot.ax
    assert ax.get_yscale() == "log" and ax.get_ylim() == pytest.approx((0.005, 1.0))
    assert ax.get_xlim() == pytest.approx((-40, 2040))
    labels = [t.get_text() for t in ax.get_yticklabels() if ax.get_ylim()[0] <= t.get_position()[1] <= 1.0]
    assert labels == ["0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch (full-batch steps)", "loss")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train/loss", "val/loss"]
    assert plot.title.get_text() == "lr=0.3, seed=1 · val/loss 0.005205"
    assert inside(plot.fig, plot.canvas, plot.title)


def test_wide_tick_labels_and_long_titles_stay_inside_the_figure():
    curves = {"train/loss": [(s, -0.00125 + 1e-7 * s) for s in range(0, 2001, 100)]}  # linear: any sign
    plot = Layouts().loss(curves)
    title = "a_long_key_name=0.000123456, another_long_key=something, third_key=3 · val/loss 0.005205"
    plot.render(curves, title)
    assert plot.ax.get_yscale() == "linear"
    assert inside(plot.fig, plot.canvas, plot.title)
    assert plot.title.get_text().startswith("a_long_key_name=0.000123456")

    class Line:  # the regression fit of scores around 100000: six-digit tick labels
        is_classifier, device = False, "cpu"

        def __call__(self, x):
            return 1000 * x + 100_000

        def predictions(self, out):
            return out

    x = torch.linspace(0, 10, 20).reshape(-1, 1)
    fit = Layouts().fit(False, 1, x, Line()(x))
    fit.render(Line(), x, Line()(x), 100, None, "scores")
    assert fit.ax.get_ylabel() == "y" and inside(fit.fig, fit.canvas, fit.title)
    assert fit.title.get_text() == "scores · epoch 100"


def test_a_flat_or_empty_curve_still_gets_an_axis_with_a_height():
    flat = {"train/loss": [(s, 0.5) for s in range(0, 101, 10)]}
    assert loss_axes(flat)[2:] == ("log", (0.5, 1.0))
    assert loss_axes({"train/loss": [(0, float("nan"))]})[2:] == ("linear", (0.0, 1.0))


def test_runs_share_a_layout_only_where_their_own_axes_coincide():
    layouts = Layouts()
    a, b, c = decaying(0.7, 0.005), decaying(0.69, 0.006), decaying(0.7, 0.08)
    assert layouts.loss(a) is layouts.loss(b)  # the same 1-2-5 bounds: one layout
    assert layouts.loss(c) is not layouts.loss(a) and loss_axes(c)[3] == pytest.approx((0.05, 1.0))
    x, y = torch.randn(40, 2), torch.randint(0, 2, (40, 1)).float()
    assert layouts.fit(True, 1, x, y) is layouts.fit(True, 1, x.clone(), y.clone())
    assert layouts.fit(True, 1, x * 2, y) is not layouts.fit(True, 1, x, y)


def test_the_title_names_a_job_by_its_swept_values_and_a_run_by_its_experiment(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / ".sweep").mkdir(parents=True)
    definition = {"experiment": "blobs_mlp", "overrides": ["model.optimizer.lr=0.03,0.3", "seed=0,1"], "sweeper": {}}
    OmegaConf.save(OmegaConf.create(definition), sweep / ".sweep" / "definition.yaml")
    cfg = OmegaConf.create(
        {"name": "blobs_mlp", "seed": 1, "model": {"optimizer": {"lr": 0.03}}, "monitor": {"metric": "val/loss"}}
    )
    assert run_title(cfg, sweep / "03_lr=0.03,seed=1", 0.078123) == "lr=0.03, seed=1 · val/loss 0.07812"
    assert run_title(cfg, sweep / "03_lr=0.03,seed=1") == "lr=0.03, seed=1"
    assert run_title(cfg, tmp_path / "runs" / "one", 0.5) == "blobs_mlp · val/loss 0.5"
