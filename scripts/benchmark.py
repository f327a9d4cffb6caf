"""How much deepbasics costs over the plain tutorial loop, on the make_blobs NeuralNet recipe
(experiment=blobs_mlp: 2000 full-batch epochs), with one CPU thread on both sides.

    .venv/bin/python scripts/benchmark.py [--repeats 5] [--epochs 2000]

- fit: the plain PyTorch loop against `trainer.fit` with metrics, TensorBoard and checkpoints on
  (deepbasics' defaults: log every 100 epochs, validate and checkpoint every 500), in one process;
- process: `python scripts/tutorial_blobs.py` against `deepbasics-train`, whole processes (imports,
  data, training, test, figures and files written);
- answers: `deepbasics-train --help` and a mistyped key, whole processes;
- progress: the fit with the live bar (progress=bar) against the plain lines (progress=lines).
Each pair alternates, repeated; ratios of the minima (the least disturbed runs) and of the medians.
Ratios are only meaningful within one run of this script: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def plain_fit(epochs: int) -> float:
    """The tutorial's loop on deepbasics' own blobs data and init, timed from the first step to the last."""
    import torch

    from deepbasics.data import BlobsDataModule
    from deepbasics.models.nets import NeuralNet

    dm = BlobsDataModule(centers=[[1, 1], [-1, -1], [1, -1], [-1, 1]], n_val=20, labels=[0, 0, 1, 1], seed=42)
    dm.setup()
    x, y = dm.splits["train"]
    torch.manual_seed(42)
    model = NeuralNet(2, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
    criterion = torch.nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        optimizer.zero_grad()
        cost = criterion(model(x), y)
        cost.backward()
        optimizer.step()
    return time.perf_counter() - start


def project_fit(epochs: int, progress: str = "lines") -> float:
    """deepbasics' trainer.fit for the default experiment, everything on, timed around fit alone; the
    console gets the plain lines or the live bar (``progress``), written into a buffer."""
    import contextlib
    import io

    from hydra import compose, initialize_config_dir

    from deepbasics.config.paths import CONF_DIR
    from deepbasics.config.resolvers import register_resolvers
    from deepbasics.config.schema import Schedule
    from deepbasics.run.build import build_datamodule, build_model, build_trainer

    register_resolvers()
    with tempfile.TemporaryDirectory() as run_dir:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"epochs={epochs}", f"paths.run_dir={run_dir}", f"progress={progress}"])
        import lightning as L

        L.seed_everything(cfg.seed, verbose=False)
        schedule = Schedule.of(cfg)
        datamodule = build_datamodule(cfg)
        model = build_model(cfg, schedule, datamodule)
        trainer = build_trainer(cfg, schedule, Path(run_dir))
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            trainer.fit(model, datamodule=datamodule)
            elapsed = time.perf_counter() - start
        assert trainer.global_step == epochs and (Path(run_dir) / "checkpoints" / "last.ckpt").is_file()
        return elapsed


def wall(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def alternate(a, b, repeats: int) -> tuple[list[float], list[float]]:
    """Timings of each side, the two interleaved so that load on the machine hits both alike."""
    first, second = [], []
    for _ in range(repeats):
        first.append(a())
        second.append(b())
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2000)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    plain_fit(50), project_fit(100)  # warm both paths (lazy imports, allocator) before timing
    fit_plain, fit_ours = alternate(lambda: plain_fit(args.epochs), lambda: project_fit(args.epochs), args.repeats)
    fit_lines, fit_bar = alternate(
        lambda: project_fit(args.epochs, "lines"), lambda: project_fit(args.epochs, "bar"), args.repeats
    )

    with tempfile.TemporaryDirectory() as cwd:
        tutorial = [sys.executable, str(REPO / "scripts" / "tutorial_blobs.py"), f"--epochs={args.epochs}"]
        ours = [str(BIN / "deepbasics-train"), f"epochs={args.epochs}"]
        proc_plain, proc_ours = alternate(lambda: wall(tutorial, cwd), lambda: wall(ours, cwd), args.repeats)
        help_time, error_time = alternate(
            lambda: wall([str(BIN / "deepbasics-train"), "--help"], cwd),
            lambda: wall([str(BIN / "deepbasics-train"), "epoks=10"], cwd),
            args.repeats,
        )

    rows = [
        (f"fit ({args.epochs} epochs)", fit_plain, fit_ours),
        ("whole process", proc_plain, proc_ours),
    ]
    # The minimum is the least disturbed run (other load only ever adds time); the median shows the spread.
    print(f"make_blobs NeuralNet, {args.epochs} full-batch epochs, 1 thread, {args.repeats} alternating runs each")
    print(f"{'':20}{'plain PyTorch':>14}{'deepbasics':>12}{'ratio (min)':>13}{'ratio (median)':>16}")
    for name, plain, ours in rows:
        ratio_min, ratio_median = min(ours) / min(plain), statistics.median(ours) / statistics.median(plain)
        print(f"{name:20}{min(plain):>13.3f}s{min(ours):>11.3f}s{ratio_min:>12.2f}x{ratio_median:>15.2f}x")
    print(f"{'--help':20}{'':>14}{statistics.median(help_time):>11.3f}s  (median)")
    print(f"{'config error':20}{'':>14}{statistics.median(error_time):>11.3f}s  (median)")
    bar_min, bar_median = min(fit_bar) / min(fit_lines), statistics.median(fit_bar) / statistics.median(fit_lines)
    print(f"live progress bar over plain lines, fit: {bar_min:.3f}x (min), {bar_median:.3f}x (median)")
    per_epoch = (min(fit_plain) / args.epochs * 1e3, min(fit_ours) / args.epochs * 1e3)
    print(f"per epoch (min): plain {per_epoch[0]:.3f} ms, deepbasics fit {per_epoch[1]:.3f} ms")


if __name__ == "__main__":
    main()
