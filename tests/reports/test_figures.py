"""The figures read back through matplotlib as they are about to be saved: each figure's axes come from its
own run (log axis for losses over decades, ticks that read), nothing is clipped at the figure's edge, a
layout drawn again shows the new run's own fit, and the title names the run and its result."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepbasics.reports.figures import FitPlot, LossPlot, fit_axes, loss_axes, run_title


def inside(fig) -> bool:
    """Whether everything a drawn figure shows (axes, tick labels, axis labels, legends, colour bar, the
    run's title) lies within the figure."""
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    boxes = [fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)]
    boxes += [text.get_window_extent(renderer) for text in fig.texts]
    return all(b.x0 >= -1 and b.y0 >= -1 and b.x1 <= width + 1 and b.y1 <= height + 1 for b in boxes)


def decaying(start: float, end: float, steps: int = 2000) -> dict[str, list[tuple[int, float]]]:
    rate = math.log(start / end) / steps
    return {
        "train/loss": [(s, start * math.exp(-rate * s)) for s in range(0, steps + 1, 100)],
        "val/loss": [(s, 1.1 * start * math.exp(-rate * s)) for s in range(500, steps + 1, 500)],
    }


def test_a_loss_over_decades_is_drawn_on_a_log_axis_whose_ticks_read():
    plot = LossPlot(loss_axes(decaying(0.7, 0.005)))
    plot.render(decaying(0.7, 0.005), "lr=0.3, seed=1 · val/loss 0.005205")
    (ax,) = plot.fig.axes
    assert ax.get_yscale() == "log" and ax.get_ylim() == pytest.approx((0.001, 1.0))  # whole decades
    assert ax.get_xlim() == pytest.approx((-40, 2040))
    labels = [t.get_text() for t in ax.get_yticklabels() if 0.001 <= t.get_position()[1] <= 1.0]
    assert labels == ["0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "loss")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train/loss", "val/loss"]
    assert plot.title.get_text() == "lr=0.3, seed=1 · val/loss 0.005205" and inside(plot.fig)


def test_a_loss_of_any_sign_and_a_long_title_stay_inside_the_figure():
    curves = {"train/loss": [(s, -0.00125 + 1e-7 * s) for s in range(0, 2001, 100)]}
    title = "a_long_key_name=0.000123456, another_long_key=something, third_key=3, fourth_key=4 · val/loss 0.005205"
    plot = LossPlot(loss_axes(curves))
    plot.render(curves, title)
    assert plot.fig.axes[0].get_yscale() == "linear" and inside(plot.fig)
    flat = {"train/loss": [(s, 0.5) for s in range(0, 101, 10)]}
    assert loss_axes(flat)[2:] == ("log", (0.1, 1.0)), "a flat curve still gets an axis with a height"
    assert loss_axes({"train/loss": [(0, 1.0), (10, 0.1)]})[3] == (0.1, 10.0), "a decade's ends are inside it"
    assert loss_axes({"train/loss": [(0, float("nan"))]})[2] == "linear"


def test_runs_share_a_loss_layout_only_where_their_own_axes_coincide():
    a, b, c = decaying(0.7, 0.005), decaying(0.69, 0.006), decaying(0.7, 0.08)
    assert loss_axes(a) == loss_axes(b) and loss_axes(c)[3] == pytest.approx((0.01, 1.0))


class Line:
    """A regression's module as the figures see it: scores around 100000, six-digit tick labels."""

    is_classifier, device = False, "cpu"

    def __init__(self, slope: float):
        self.slope = slope

    def __call__(self, x):
        return self.slope * x + 100_000

    def predictions(self, out):
        return out


def test_a_fit_layout_drawn_again_shows_the_new_runs_fit():
    x = torch.linspace(0, 10, 20).reshape(-1, 1)
    plot = FitPlot(fit_axes(Line(1000), x, Line(1000)(x)))
    first = plot.render(Line(1000), x, Line(1000)(x), 100, None, "scores")
    assert plot.ax.get_ylabel() == "y" and plot.title.get_text() == "scores · epoch 100" and inside(plot.fig)
    again = plot.render(Line(1000), x, Line(1000)(x), 100, None, "scores")
    other = plot.render(Line(900), x, Line(1000)(x), 200, None, "scores")
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    # what another run draws over the layout is its own: a fresh layout gives the same picture
    fresh = FitPlot(fit_axes(Line(1000), x, Line(1000)(x))).render(Line(900), x, Line(1000)(x), 200, None, "scores")
    assert np.array_equal(other, fresh)


def test_decision_regions_of_two_and_of_several_classes():
    from deepbasics.models import BinaryClassifier, MulticlassClassifier

    x = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    net = {"_target_": "deepbasics.models.nets.NeuralNet", "in_features": 2, "hidden_size": 4}
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    for module, y in (
        (BinaryClassifier(net, sgd), torch.tensor([[0.0], [0.0], [1.0], [1.0]])),
        (MulticlassClassifier(net | {"out_features": 4}, sgd, num_classes=4), torch.arange(4.0)[:, None]),
    ):
        plot = FitPlot(fit_axes(module, x, y))
        image = plot.render(module, x, y, 5, None, "blobs")
        assert image.shape[2] == 3 and len(np.unique(image.reshape(-1, 3), axis=0)) > 20
        assert inside(plot.fig)  # fmt: skip


def test_the_title_names_a_job_by_its_swept_values_and_a_run_by_its_experiment():
    swept = {"model.optimizer.lr": 0.03, "seed": 1}
    assert run_title("blobs_mlp", swept, ("val/loss", 0.078123)) == "lr=0.03, seed=1 · val/loss 0.07812"
    assert run_title("blobs_mlp", swept) == "lr=0.03, seed=1"
    assert run_title("blobs_mlp", {}, ("val/loss", 0.5)) == "blobs_mlp · val/loss 0.5"
    assert run_title("blobs_mlp", {}, ("val/loss", float("nan"))) == "blobs_mlp"


@pytest.mark.parametrize("classifier", [True, False])
def test_data_no_figure_shows(classifier):
    class Module:
        is_classifier = classifier

    assert fit_axes(Module(), torch.zeros(5, 3), torch.zeros(5, 1)) is None


def test_close_data_sets_share_one_fit_layout_that_holds_their_points():
    """A sweep's seeds draw data of close ranges: their limits snap to the same steps, so one layout serves them."""

    class Classifier:
        is_classifier = True

    torch.manual_seed(0)
    x, y = torch.randn(80, 2), torch.ones(80, 1)
    axes = fit_axes(Classifier(), x, y)
    assert fit_axes(Classifier(), x + 0.05, y) == axes
    for i, (low, high) in enumerate(axes[3:]):
        assert low <= x[:, i].min() - 0.5 and high >= x[:, i].max() + 0.5
        assert high - low < 1.4 * (x[:, i].max() - x[:, i].min() + 1)
