"""The READMEs' pictures, made from real runs: a run's fit and loss figures, a sweep's report, and the sweep's
curves as TensorBoard's Scalars tab draws them (read back from the jobs' event files with tensorboard's reader).

.venv/bin/python scripts/readme_pictures.py                  # writes outputs/readme/*.png (committed)
.venv/bin/python scripts/readme_pictures.py --out DIR --epochs 100    # a quicker trial elsewhere (the tests)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from deepbasics.cli import commands

PICTURES = ("fit.png", "loss.png", "sweep.png", "tensorboard.png")
SWEEP = ["hydra/launcher=vectorized", "model.optimizer.lr=0.01,0.03,0.1,0.3", "seed=1,2,3"]


def deepbasics_train(*args: str) -> None:
    """``deepbasics-train <args>`` as a user types it, through its entry point in this process."""
    sys.argv = ["deepbasics-train", *args]
    try:
        commands.train()
    except SystemExit as stop:
        if stop.code:
            raise RuntimeError(f"deepbasics-train {' '.join(args)} exited {stop.code}") from None


def draw_tensorboard(sweep: Path, picture: Path) -> None:
    """Each job's train/loss from its events, one line a job named by its directory, as TensorBoard's chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    figure, axes = plt.subplots(figsize=(7.5, 4), dpi=100)
    for job in sorted(p for p in sweep.iterdir() if p.name[:2].isdigit()):
        points = EventAccumulator(str(job), size_guidance={"scalars": 0}).Reload().Scalars("train/loss")
        axes.plot([p.step for p in points], [p.value for p in points], linewidth=1.2, label=job.name)
    axes.set(yscale="log", xlabel="step", title="train/loss (TensorBoard's Scalars, one run per sweep job)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6, ncol=2, frameon=False, loc="upper right")
    figure.tight_layout()
    figure.savefig(picture)
    plt.close(figure)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/readme"))
    parser.add_argument("--epochs", type=int, default=2000, help="the make_blobs NeuralNet recipe's 2000")
    options = parser.parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        common = ["experiment=blobs_mlp", f"epochs={options.epochs}", f"paths.output_dir={work}"]
        deepbasics_train(*common, "seed=7")
        (run,) = Path(work, "runs", "blobs_mlp").iterdir()
        for name in ("fit.png", "loss.png"):
            shutil.copy(run / "figures" / name, options.out / name)
        deepbasics_train("-m", *common, *SWEEP)
        (sweep,) = Path(work, "multiruns", "blobs_mlp").iterdir()
        shutil.copy(sweep / "summary.png", options.out / "sweep.png")
        draw_tensorboard(sweep, options.out / "tensorboard.png")
    print(f"wrote {', '.join(PICTURES)} into {options.out}")
    return options.out


if __name__ == "__main__":
    main()
