"""Sweeps and dashboards: multirun grids on the parallel launcher, Optuna studies that continue, the sweep
report, the TensorBoard hparams tab and figures."""

import csv
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import REPO, compose_experiment, read_metrics, run_in_this_process
from deepbasics.run.training import train

SHORT = ["epochs=100", "log_every=50", "val_every=50", "callbacks.model_checkpoint.every_n_epochs=50"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def sweep_dir(cwd: Path, experiment: str) -> Path:
    (directory,) = (cwd / "outputs" / "multiruns" / experiment).iterdir()
    return directory


@pytest.mark.slow
def test_parallel_grid_with_a_failing_job_and_its_report(tmp_path, monkeypatch, capfd):
    grid = ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "experiment=linear_scores", *SHORT,
            "model.optimizer.lr=0.01,0.05,0.3", "seed=1,2"]  # fmt: skip
    proc = run_in_this_process("deepbasics-train", grid, tmp_path, monkeypatch, capfd)
    sweep = sweep_dir(tmp_path, "linear_scores")
    assert proc.returncode == 1, proc.stderr  # two jobs diverged: the sweep says so in its exit status
    *failed, last = proc.stderr.strip().splitlines()[-3:]
    assert last == (
        f"error: 2 of 6 jobs did not finish (see {sweep / 'summary.md'}); the same command with resume=auto"
        " finishes the sweep"
    )
    assert [line.split()[2] for line in failed] == ["04_lr=0.3,seed=1", "05_lr=0.3,seed=2"]
    assert all(" failed: the loss became " in line for line in failed), failed
    # job directories (and so TensorBoard's run names) read as the sweep: number, then the swept values
    # alone (what every job shares is the sweep's, in the report's header line)
    grid_points = [(lr, seed) for lr in ("0.01", "0.05", "0.3") for seed in (1, 2)]
    names = [f"{i:02d}_lr={lr},seed={seed}" for i, (lr, seed) in enumerate(grid_points)]
    assert f"sweep report: {sweep / 'summary.md'} (6 jobs, best job {names[2]}: train/loss" in proc.stdout

    jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert [d.name for d in jobs] == names
    for job in jobs:
        assert (job / ".hydra" / "overrides.yaml").is_file() and (job / "metrics.json").is_file()

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model.optimizer.lr"], r["seed"]) for r in rows] == [
        ("0.01", "1"), ("0.01", "2"), ("0.05", "1"), ("0.05", "2"), ("0.3", "1"), ("0.3", "2")
    ]  # fmt: skip
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed"] * 2
    assert all("the loss became inf at epoch" in r["error"] for r in rows[4:])
    for row, job in zip(rows, jobs, strict=True):
        if row["status"] == "completed":
            assert float(row["value"]) == pytest.approx(read_metrics(job)["train"]["loss"])
    best = [r for r in rows if r["best"] == "*"]
    assert len(best) == 1 and best[0]["model.optimizer.lr"] == "0.05"
    assert float(best[0]["value"]) == min(float(r["value"]) for r in rows[:4])
    markdown = (sweep / "summary.md").read_text()
    assert "6 jobs, 4 completed, 2 not; monitored: train/loss (min)." in markdown
    assert f"The same in every job: experiment=linear_scores, {', '.join(SHORT)}.\n" in markdown
    header, _, *table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert (
        header.startswith("| rank | model.optimizer.lr | seed | train/loss (min) | train/mae |")
        and "epochs" not in header
    )
    assert header.endswith("| status | job | error | run_dir |")
    cells = [line.strip("|").split(" | ") for line in table]
    assert [c[0].strip() for c in cells] == ["1", "2", "3", "4", "", ""]  # ranked, the failed jobs last
    assert [float(c[3]) for c in cells[:4]] == sorted(float(c[3]) for c in cells[:4])
    assert cells[0][1].strip() == best[0]["model.optimizer.lr"]
    width, height = png_size(sweep / "summary.png")
    assert width > 400 and height > 300 and (sweep / "summary.png").stat().st_size > 10_000

    # TensorBoard's HParams opens on the first five hparams: a sweep's experiment lists the swept settings
    # alone, then the monitored metric and the test metrics; each job's session still carries every setting
    for job in jobs[:4]:  # the completed ones (linear_scores has a train split alone)
        settings, tags, events, infos = hparams_of(job)
        assert [name for name, _ in infos] == ["optimizer.lr", "seed"]
        assert tags == ["train/loss", "train/mae", "train/mse", "train/r2"] and settings["epochs"] == 100

    # the script rebuilds the same report for any multirun directory
    before = (sweep / "summary.csv").read_text()
    (sweep / "summary.csv").unlink()
    subprocess.run([sys.executable, str(REPO / "scripts" / "sweep_report.py"), str(sweep)], check=True)
    assert (sweep / "summary.csv").read_text() == before


@pytest.mark.slow
def test_optuna_study_continues_where_it_stopped(tmp_path, monkeypatch, capfd):
    """A new sweep of a stored study adds its trials to the study (a resume=auto finishes one sweep)."""
    import optuna

    search = ["hparams_search=linear_scores_optuna", *SHORT]
    for n in (3, 2):
        args = [*search, f"hydra.sweeper.n_trials={n}"]
        sweep = run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd)
        assert sweep.returncode == 0, sweep.stderr
    study = optuna.load_study(study_name="linear_scores_lr", storage=f"sqlite:///{tmp_path}/outputs/optuna.db")
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    sweeps = sorted((tmp_path / "outputs" / "multiruns" / "linear_scores").iterdir())
    assert len(sweeps) == 2
    rows = [row for s in sweeps for row in csv.DictReader(open(s / "summary.csv"))]
    # every trial's returned value is the final train/loss its run wrote
    finished = sorted(float(r["value"]) for r in rows if r["status"] == "completed")
    assert finished == sorted(t.value for t in study.trials if t.value != float("inf"))
    lrs = sorted(float(r["model.optimizer.lr"]) for r in rows)
    assert lrs == sorted(t.params["model.optimizer.lr"] for t in study.trials)


def test_the_summary_figure_opens_on_the_comparison():
    """Read back through matplotlib before saving: ticks at the swept values as written, a log axis for
    values over decades, the best job starred and named, the seed dots in the legend."""
    from deepbasics.reports.sweep import summary_figure

    values = {("0.003", "0"): 0.5, ("0.003", "1"): 0.4, ("0.03", "0"): 0.05, ("0.03", "1"): 0.07,
              ("0.3", "0"): 0.004, ("0.3", "1"): 0.006}  # fmt: skip
    rows = [{"job": f"{i:02d}_lr={lr},seed={seed}", "model.optimizer.lr": lr, "seed": seed, "value": v,
             "status": "completed", "_mode": "min"} for i, ((lr, seed), v) in enumerate(values.items())]  # fmt: skip
    (ax,) = summary_figure(rows, ["model.optimizer.lr", "seed"], "val/loss").axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.003", "0.03", "0.3"]
    assert list(ax.get_xticks()) == [0.003, 0.03, 0.3] and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["mean over seeds", "each seed", "best: 04_lr=0.3,seed=0 (0.004)"]
    assert ax.get_xlabel() == "model.optimizer.lr" and ax.get_ylabel() == "val/loss"
    # values within a decade stay on a linear axis
    for row in rows:
        row["value"] = 0.5 + row["value"]
    assert summary_figure(rows, ["model.optimizer.lr", "seed"], "val/loss").axes[0].get_yscale() == "linear"


def hparams_of(tensorboard_dir: Path) -> tuple[dict, list[str], EventAccumulator, list[tuple[str, bool]]]:
    """What TensorBoard's HParams plugin reads from a run: its settings, the metrics' tags in order, the
    events, and the experiment's hparams in order with whether each differs between the runs."""
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    settings, metric_tags, infos = {}, [], []
    for raw in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            settings = {k: v.string_value or v.number_value for k, v in data.session_start_info.hparams.items()}
        if data.HasField("experiment"):
            metric_tags = [m.name.tag for m in data.experiment.metric_infos]
            infos = [(info.name, info.differs) for info in data.experiment.hparam_infos]
    return settings, metric_tags, events, infos


def test_hparams_tab_holds_real_final_metrics_and_figures_are_drawn(tmp_path):
    cfg = compose_experiment("blobs_mlp", "epochs=1000", run_dir=tmp_path)
    train(cfg)
    metrics = read_metrics(tmp_path)
    settings, tags, events, infos = hparams_of(tmp_path)
    assert (
        settings["optimizer.lr"] == 0.03 and settings["net.hidden_size"] == 5 and settings["experiment"] == "blobs_mlp"
    )
    assert "data.seed" not in settings, "data.seed is ${seed}: one setting, shown once"
    # a run of its own writes no experiment: TensorBoard works out what differs across the runs it shows
    assert infos == [] and tags == []
    # the final points HParams reads are the run's own last point of each tag; only the end-of-run test
    # metrics are one point each, and no hp/* copies are written
    counts = {tag: len(events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    assert {tag for tag, n in counts.items() if n == 1} == {"test/acc", "test/auroc", "test/loss"}, counts
    assert counts["train/loss"] == 11 and counts["val/loss"] == 2, counts
    for tag in ["val/loss", "test/acc", "test/auroc", "test/loss", "val/acc", "val/auroc", "train/acc", "train/loss"]:
        stage, name = tag.split("/")
        last = events.Scalars(tag)[-1]
        assert last.step == 1000 and last.value == pytest.approx(metrics[stage][name]), tag
    assert not [t for t in events.Tags()["scalars"] if t.startswith("hp/")], "no one-point charts"
    assert [image.step for image in events.Images("visual/fit")] == [1000]
    for name in ("fit.png", "loss.png"):
        width, height = png_size(tmp_path / "figures" / name)
        assert width > 400 and height > 300 and (tmp_path / "figures" / name).stat().st_size > 15_000


@pytest.mark.parametrize(
    "experiment, figures", [("linear_study_hours", {"fit.png", "loss.png"}), ("logistic_diabetes", {"loss.png"})]
)
def test_figures_by_model_kind(tmp_path, experiment, figures):
    train(compose_experiment(experiment, run_dir=tmp_path))
    assert {p.name for p in (tmp_path / "figures").iterdir()} == figures
