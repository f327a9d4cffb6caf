"""How much deepbasics costs over the plain tutorial loop, on the make_blobs NeuralNet recipe
(experiment=blobs_mlp: 2000 full-batch epochs), with one CPU thread on both sides.

    .venv/bin/python scripts/benchmark.py [--repeats 5] [--epochs 2000]

- fit: the plain PyTorch loop against `trainer.fit` with metrics, TensorBoard and checkpoints on
  (deepbasics' defaults: log every 100 epochs, validate and checkpoint every 500), in one process; and
  against the smallest stock LightningModule with the same logging, logger and checkpoint callback (the
  price of Lightning's own loop, which deepbasics pays since it trains in that loop);
- process: `python scripts/tutorial_blobs.py` against `deepbasics-train`, whole processes (imports,
  data, training, test, figures and files written);
- answers: `deepbasics-train --help` and a mistyped key, whole processes;
- progress: the fit with the live bar (progress=bar) against the plain lines (progress=lines);
- --minibatch: a 1M-row, 8-feature CSV in batches of 1024 for 3 epochs against scripts/plain_minibatch.py:
  whole processes, the fit loop alone, and peak memory beyond a 1000-row run.
- --sweep [--large 10000]: lr x seed grids of experiment=blobs_mlp (2000 epochs) under hydra/launcher=vectorized,
  whole processes, once each (an hour with the large grid), against their bounds: 48 and 100 jobs against the basic
  launcher, 100 against scripts/stacked_reference.py (the same work as one hand-written stacked loop), 1000 against
  100; the large grid's time and peak memory; the launcher's own account of its time outside the fit.
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


def stock_lightning_fit(epochs: int) -> float:
    """The reference for the fit's overhead: the tutorial's net as the smallest LightningModule that logs
    as deepbasics does (the train loss every 100 steps, the val loss every 500) with a TensorBoard logger
    and a ModelCheckpoint every 500 epochs, each epoch one full-batch step."""
    import lightning as L
    import torch

    from deepbasics.data import BlobsDataModule
    from deepbasics.models.nets import NeuralNet

    dm = BlobsDataModule(centers=[[1, 1], [-1, -1], [1, -1], [-1, 1]], n_val=20, labels=[0, 0, 1, 1], seed=42)
    dm.setup()
    (x, y), val = dm.splits["train"], dm.splits["val"]

    class Tutorial(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(42)
            self.net = NeuralNet(2, 5)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(batch[0]), batch[1])
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", torch.nn.functional.binary_cross_entropy_with_logits(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.net.parameters(), lr=0.03)

    class Once:  # one full batch per epoch: any sized iterable serves Lightning's loop (a list would be
        def __init__(self, batch):  # taken for several dataloaders)
            self.batch = batch

        def __iter__(self):
            return iter([self.batch])

        def __len__(self):
            return 1

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return Once((x, y))

        def val_dataloader(self):
            return Once(val)

    with tempfile.TemporaryDirectory() as run_dir:
        checkpoint = L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run_dir, monitor="val/loss", save_last=True, every_n_epochs=500
        )
        trainer = L.Trainer(
            max_epochs=epochs, check_val_every_n_epoch=500, callbacks=[checkpoint],
            logger=L.pytorch.loggers.TensorBoardLogger(run_dir),
            log_every_n_steps=100, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
            num_sanity_val_steps=0,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit(Tutorial(), datamodule=Data())
        return time.perf_counter() - start


def project_fit(epochs: int, progress: str = "lines", experiment: str = "blobs_mlp", extra=()) -> float:
    """deepbasics' trainer.fit in a whole run of ``experiment`` (``deepbasics.fit``, everything on), timed
    around Lightning's fit alone; the console gets the plain lines or the live bar, written into a buffer."""
    import contextlib
    import io

    import lightning as L

    import deepbasics

    fit, timed = L.Trainer.fit, []

    def timed_fit(trainer, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(trainer, *args, **kwargs)
        finally:
            timed.append(time.perf_counter() - start)

    L.Trainer.fit = timed_fit
    try:
        with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
            result = deepbasics.fit(experiment, [f"epochs={epochs}", f"progress={progress}", *extra], output_dir=out)
            assert result.metrics["epochs"] == epochs and result.checkpoint is not None
    finally:
        L.Trainer.fit = fit
    return timed[0]


def peak_rss_mb(command: list[str], cwd: str) -> float:
    """The peak resident memory of a whole command, in MB (its own child accounting, so earlier runs of
    this script do not count)."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,"
        " stderr=subprocess.DEVNULL, check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], cwd=cwd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def minibatch(repeats: int, rows: int = 1_000_000, features: int = 8, batch: int = 1024, epochs: int = 3) -> None:
    """A 1M-row, 8-feature CSV in mini-batches of 1024 for 3 epochs: deepbasics-train against
    scripts/plain_minibatch.py (numpy load, randperm batches, SGD), whole processes and peak memory."""
    import numpy as np

    with tempfile.TemporaryDirectory() as cwd:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, features)).astype(np.float32)
        y = (x @ rng.standard_normal(features) + 0.5 * rng.standard_normal(rows) > 0).astype(np.float32)
        big, small = Path(cwd) / "big.csv", Path(cwd) / "small.csv"
        np.savetxt(big, np.column_stack([x, y]), delimiter=",", fmt="%.6g")
        np.savetxt(small, np.column_stack([x, y])[:1000], delimiter=",", fmt="%.6g")

        def ours(path):
            return [
                str(BIN / "deepbasics-train"), "experiment=logistic_diabetes", f"data.path={path}",
                f"model.net.in_features={features}", f"data.batch_size={batch}", f"epochs={epochs}",
                f"log_every={epochs}", f"val_every={epochs}", "model.optimizer.lr=0.1",
            ]  # fmt: skip

        plain = [sys.executable, str(REPO / "scripts" / "plain_minibatch.py"), str(big), f"--epochs={epochs}"]
        proc_plain, proc_ours = alternate(lambda: wall(plain, cwd), lambda: wall(ours(big), cwd), repeats)
        loop_plain = [
            float(subprocess.run(plain, cwd=cwd, capture_output=True, text=True, check=True).stdout)
            for _ in range(repeats)
        ]
        loop_ours = [minibatch_fit(big, features, batch, epochs) for _ in range(repeats)]
        data_mb = rows * (features + 1) * 4 / 2**20
        peak = peak_rss_mb(ours(big), cwd) - peak_rss_mb(ours(small), cwd)
        peak_plain = peak_rss_mb(plain, cwd) - peak_rss_mb(plain[:2] + [str(small)] + plain[3:], cwd)

    print(
        f"\n{rows:,} rows x {features} features CSV, batches of {batch}, {epochs} epochs, 1 thread, {repeats} runs each"
    )
    print(f"{'':20}{'plain PyTorch':>14}{'deepbasics':>12}{'ratio (min)':>13}{'ratio (median)':>16}")
    for name, a, b in (("whole process", proc_plain, proc_ours), ("fit loop", loop_plain, loop_ours)):
        print(f"{name:20}{min(a):>13.3f}s{min(b):>11.3f}s{min(b) / min(a):>12.2f}x"
              f"{statistics.median(b) / statistics.median(a):>15.2f}x")  # fmt: skip
    print(f"peak memory beyond a 1000-row run: deepbasics {peak:.0f} MB, plain {peak_plain:.0f} MB;"
          f" the float32 data are {data_mb:.0f} MB ({peak / data_mb:.2f}x)")  # fmt: skip


def minibatch_fit(path: Path, features: int, batch: int, epochs: int) -> float:
    """deepbasics' trainer.fit alone for the mini-batch recipe, in this process (loading excluded)."""
    extra = [f"data.path={path}", f"data.batch_size={batch}", f"log_every={epochs}", f"val_every={epochs}",
             "model.optimizer.lr=0.1"]  # fmt: skip
    return project_fit(epochs, experiment="logistic_diabetes", extra=extra)


def sweep(epochs: int, large: int) -> None:
    """Issue 30's bounds on vectorized sweeps, each measured once, whole processes: 48 and 100 jobs against the
    basic launcher, 100 against the hand-written stacked loop (scripts/stacked_reference.py), 1000 against 100, and
    a grid of ``large`` jobs (time, peak memory). Also 100 against the parallel launcher, for the README."""
    import re

    def grid(jobs: int) -> list[str]:  # the learning rate outer, seeds inner, as scripts/stacked_reference.py numbers
        assert jobs % 5 == 0 or jobs % 2 == 0, f"{jobs} jobs: a multiple of 5 (5 learning rates) or 2"
        rates, seeds = ("0.01,0.03,0.1,0.3,1.0", jobs // 5) if jobs % 5 == 0 else ("0.03,0.3", jobs // 2)
        return [str(BIN / "deepbasics-train"), "-m", "experiment=blobs_mlp", f"epochs={epochs}",
                f"model.optimizer.lr={rates}", f"seed=range({seeds})"]  # fmt: skip

    def timed(command: list[str], cwd: str) -> tuple[float, float, str]:
        """Seconds, peak resident MB and output of a whole command."""
        probe = (
            "import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
            "print(out.stdout + out.stderr);"
            "print(out.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe, *command], cwd=cwd, capture_output=True, text=True)
        spent = time.perf_counter() - start
        *text, last = out.stdout.rstrip().rsplit("\n", 1)
        code, peak = map(int, last.split())
        if code != 0:  # a sweep with failed jobs still has a time; the line says so
            print(f"exit status {code}: {command[:4]}", flush=True)
        return spent, peak / 1024, "".join(text)

    vectorized = ["hydra/launcher=vectorized"]
    reference = [sys.executable, str(REPO / "scripts" / "stacked_reference.py"), "--jobs", "100", f"--epochs={epochs}"]
    runs: dict[str, tuple[float, float, str]] = {}
    with tempfile.TemporaryDirectory() as cwd:
        for name, command in (
            ("48 vectorized", grid(48) + vectorized),
            ("48 basic", grid(48)),
            ("100 vectorized", grid(100) + vectorized),
            ("100 basic", grid(100)),
            ("100 parallel", grid(100) + ["hydra/launcher=parallel"]),
            ("100 reference", [*reference, "--out", str(Path(cwd) / "reference")]),
            ("1000 vectorized", grid(1000) + vectorized),
            (f"{large} vectorized", grid(large) + vectorized),
        ):
            runs[name] = timed(command, cwd)
            outside = re.findall(r"fit ([\d.]+) s, (\d+) ms a job outside the fit", runs[name][2])
            fits, per_job = sum(float(f) for f, _ in outside), max((int(ms) for _, ms in outside), default=0)
            extra = f"; stacked: fit {fits:.1f} s, {per_job} ms a job outside it (most of its groups)" * bool(outside)
            print(f"{name:>17}: {runs[name][0]:7.1f} s, peak {runs[name][1]:6.0f} MB{extra}", flush=True)
    seconds = {name: run[0] for name, run in runs.items()}
    bounds = [
        ("48 jobs, basic launcher / vectorized", seconds["48 basic"] / seconds["48 vectorized"], ">=", 8),
        ("100 jobs, basic launcher / vectorized", seconds["100 basic"] / seconds["100 vectorized"], ">=", 15),
        ("100 jobs, vectorized / hand-written loop", seconds["100 vectorized"] / seconds["100 reference"], "<=", 2.5),
        ("1000 jobs / 100 jobs, vectorized", seconds["1000 vectorized"] / seconds["100 vectorized"], "<=", 4),
    ]
    print(f"make_blobs NeuralNet grids, {epochs} full-batch epochs, whole processes, one run each")
    for what, ratio, sense, bound in bounds:
        met = ratio >= bound if sense == ">=" else ratio <= bound
        print(f"{what:45} {ratio:6.2f}x  (bound {sense} {bound}x: {'met' if met else 'NOT met'})")
    print(f"100 jobs, parallel launcher / vectorized: {seconds['100 parallel'] / seconds['100 vectorized']:.2f}x")
    big = runs[f"{large} vectorized"]
    finished = re.search(r"(\d+) of (\d+) jobs did not finish", big[2])
    print(f"{large} jobs: {big[0]:.0f} s, peak memory {big[1]:.0f} MB, "
          f"{'all finished' if not finished else finished.group(0)}")  # fmt: skip


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
    parser.add_argument("--minibatch", action="store_true", help="only the 1M-row mini-batch comparison")
    parser.add_argument("--sweep", action="store_true", help="only the vectorized sweep bounds")
    parser.add_argument("--large", type=int, default=10_000, help="--sweep: the jobs of the largest grid")
    args = parser.parse_args()
    if args.sweep:
        sweep(args.epochs, args.large)
        return
    if args.minibatch:
        import torch

        torch.set_num_threads(1)
        minibatch(args.repeats)
        return

    import torch

    torch.set_num_threads(1)
    plain_fit(50), project_fit(100), stock_lightning_fit(500)  # warm every path (lazy imports) before timing
    fit_plain, fit_ours, fit_stock = [], [], []
    for _ in range(args.repeats):  # the three interleaved, so that load on the machine hits them alike
        fit_plain.append(plain_fit(args.epochs))
        fit_ours.append(project_fit(args.epochs))
        fit_stock.append(stock_lightning_fit(args.epochs))
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
    stock = statistics.median(fit_stock) / statistics.median(fit_plain)
    print(
        f"{'stock Lightning fit':20}{'':>14}{min(fit_stock):>11.3f}s{min(fit_stock) / min(fit_plain):>12.2f}x"
        f"{stock:>15.2f}x   (the smallest module, same logging)"
    )
    print(f"deepbasics fit over stock Lightning: {min(fit_ours) / min(fit_stock):.2f}x (min),"
          f" {statistics.median(fit_ours) / statistics.median(fit_stock):.2f}x (median)")  # fmt: skip
    bar_min, bar_median = min(fit_bar) / min(fit_lines), statistics.median(fit_bar) / statistics.median(fit_lines)
    print(f"live progress bar over plain lines, fit: {bar_min:.3f}x (min), {bar_median:.3f}x (median)")
    per_epoch = (min(fit_plain) / args.epochs * 1e3, min(fit_ours) / args.epochs * 1e3)
    print(f"per epoch (min): plain {per_epoch[0]:.3f} ms, deepbasics fit {per_epoch[1]:.3f} ms")


if __name__ == "__main__":
    main()
