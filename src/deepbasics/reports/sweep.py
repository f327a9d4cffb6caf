"""The report of a multirun: summary.csv, summary.md (one row per job, best row marked) and summary.png
(the monitored metric against the swept parameters), written into the multirun directory by a Hydra
callback at the end of every sweep; ``scripts/sweep_report.py <dir>`` rebuilds it for any multirun.
Light on purpose: Hydra loads this module for every run."""

from __future__ import annotations

import csv
import math
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from deepbasics.config.settings import SPLITS
from deepbasics.config.sweep_dir import HOW_TO_RUN, recorded_jobs
from deepbasics.reports.metrics import FINISHED, read_json
from deepbasics.reports.mlflow_runs import end_sweep

IGNORED = ("hydra.", "paths.")  # overrides that say where, not what


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job, in job order: each job directory (the ones holding .hydra/overrides.yaml), and each
    job the sweep recorded (``config.sweep_dir``) that has none: a kill kept it from starting."""
    jobs = [d for d in sweep_dir.iterdir() if (d / ".hydra" / "overrides.yaml").is_file()]
    rows = []
    for job in sorted(jobs, key=_job_order):
        path = job / "metrics.json"
        metrics = read_json(path) if path.is_file() else {}
        configured, mode = _config_monitor(job)
        monitor = metrics.get("monitor") or {}
        status = metrics.get("status") or _unrecorded(job)
        row = {"job": job.name, **_overrides(OmegaConf.load(job / ".hydra" / "overrides.yaml")), "status": status}
        row["metric"] = monitor.get("metric") or configured
        row["value"] = monitor.get("value") if row["status"] in FINISHED else None
        for stage in SPLITS:
            for name, value in (metrics.get(stage) or {}).items():
                row[f"{stage}/{name}"] = value
        row["error"] = metrics.get("error", "")
        row["run_dir"] = str(job)
        row["_mode"] = mode
        rows.append(row)
    started = {int(m.group()) for m in (re.match(r"\d+", job.name) for job in jobs) if m}
    for number, overrides in enumerate(recorded_jobs(sweep_dir)):
        if number not in started:
            row = {"job": f"{number:02d} (no directory)", **_overrides(overrides), "status": "not started"}
            row.update(metric=rows[0]["metric"] if rows else "", value=None, error="", run_dir="", _mode="min")
            rows.append(row)
    return sorted(rows, key=lambda r: int(re.match(r"\d+", r["job"]).group()) if r["job"][:1].isdigit() else 0)


def _overrides(lines) -> dict[str, str]:
    overrides = {}
    for text in lines:
        key, _, value = str(text).partition("=")
        if not key.startswith(IGNORED) and key.lstrip("+~") not in HOW_TO_RUN:
            overrides[key.lstrip("+~")] = value
    return overrides


def _unrecorded(job: Path) -> str:
    """The status of a job without metrics.json: a kill stopped it (resumable from its last.ckpt) or
    before its first checkpoint."""
    return "interrupted" if (job / "checkpoints" / "last.ckpt").is_file() else "not started"


def _job_order(job: Path) -> tuple:
    """By job number (the name's leading digits: ``03_lr=0.1,seed=3``), then by name."""
    number = re.match(r"\d+", job.name)
    return (number is None, int(number.group()) if number else 0, job.name)


def _config_monitor(job: Path) -> tuple[str, str]:
    config = OmegaConf.load(job / ".hydra" / "config.yaml")
    monitor = config.get("monitor") or {}
    return str(monitor.get("metric", "")), str(monitor.get("mode", "min"))


def best_index(rows: list[dict]) -> int | None:
    scored = [
        (i, r["value"])
        for i, r in enumerate(rows)
        if isinstance(r["value"], (int, float)) and math.isfinite(r["value"])
    ]
    if not scored:
        return None
    pick = max if rows[scored[0][0]]["_mode"] == "max" else min
    return pick(scored, key=lambda item: item[1])[0]


def swept(rows: list[dict]) -> list[str]:
    """Override keys whose value differs between jobs."""
    keys = [k for k in rows[0] if k not in ("job", "status", "metric", "value", "error", "run_dir", "_mode")]
    keys = [k for k in keys if "/" not in k]
    return [k for k in keys if len({str(r.get(k)) for r in rows}) > 1]


BOOKKEEPING = ("status", "job", "error", "run_dir")


def ranks(rows: list[dict]) -> dict[int, int]:
    """Row index -> rank by the monitored value (1: the best); jobs without a value have none."""
    scored = [i for i, r in enumerate(rows) if _finite(r["value"])]
    if not scored:
        return {}
    best_first = sorted(scored, key=lambda i: rows[i]["value"], reverse=rows[scored[0]]["_mode"] == "max")
    return {i: rank for rank, i in enumerate(best_first, 1)}


def write_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Write summary.csv, summary.md and summary.png into sweep_dir; returns counts and the best row.
    summary.csv keeps every column, in job order; summary.md opens on the comparison: what was the same in
    every job in one line, then the jobs ranked by the monitored value, swept settings and metrics first."""
    sweep_dir = Path(sweep_dir)
    rows = job_rows(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir} holds no job directories (with .hydra/overrides.yaml)")
    best = best_index(rows)
    rank = ranks(rows)
    columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "_mode"]
    columns = ["best", "rank"] + [c for c in columns if c not in ("error", "run_dir")] + ["error", "run_dir"]
    table = [{"best": "*" if i == best else "", "rank": rank.get(i, ""), **r} for i, r in enumerate(rows)]

    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.6g}"
        return "" if value is None else str(value).replace("|", "\\|")

    metric, mode = rows[0]["metric"], rows[0]["_mode"]
    varied = swept(rows)
    settings = [k for k in rows[0] if k not in ("job", "status", "metric", "value", "error", "run_dir", "_mode")]
    constant = {k: rows[0][k] for k in settings if "/" not in k and k not in varied and rows[0].get(k) is not None}
    same = [f"{k}={v}" for k, v in constant.items()]
    metrics = [c for c in columns if "/" in c and c != metric]
    shown = ["rank", *varied, "value", *metrics, *BOOKKEEPING]
    headers = {"value": f"{metric} ({mode})"}
    failed = [r for r in rows if r["status"] not in FINISHED]
    lines = [f"# Sweep {sweep_dir}", ""]
    lines.append(
        f"{len(rows)} jobs, {len(rows) - len(failed)} completed, {len(failed)} not; monitored: {metric} ({mode})."
    )
    if best is not None:
        lines.append(f"Best (rank 1): job {rows[best]['job']}, {metric} = {cell(rows[best]['value'])}.")
    if same:
        lines.append(f"The same in every job: {', '.join(same)}.")
    order = sorted(range(len(table)), key=lambda i: (i not in rank, rank.get(i, 0), i))
    lines += ["", "| " + " | ".join(headers.get(c, c) for c in shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(table[i].get(c)) for c in shown) + " |" for i in order]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")

    figure = summary_figure(rows, varied, metric)
    plotted = None
    if figure is not None:
        plotted = sweep_dir / "summary.png"
        figure.savefig(plotted, dpi=110)
    best_row = rows[best] if best is not None else None
    return {"jobs": len(rows), "failed": len(failed), "best": best_row, "plot": plotted, "rows": rows, "same": constant}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def summary_figure(rows: list[dict], params: list[str], metric: str):
    """The monitored metric against the first swept numeric parameter, ticks at its swept values (seeds
    averaged into a line, each seed a dot, one line per value of the other swept parameters); a bar per job
    when nothing numeric was swept. The best job is a star, named in the legend; a metric whose values span
    a decade or more is drawn on a log axis. None when no job has a value."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from deepbasics.reports.figures import label_log_axis

    done = [r for r in rows if _finite(r["value"])]
    if not done:
        return None
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    best = rows[best_index(rows)]
    numeric = [p for p in params if p != "seed" and all(_number(r.get(p)) is not None for r in rows)]
    if numeric:
        x_key, others = numeric[0], [p for p in params if p not in (numeric[0], "seed")]
        groups: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in done:
            label = ", ".join(f"{k}={r.get(k)}" for k in others) or ("mean over seeds" if "seed" in params else metric)
            groups[label][_number(r[x_key])].append(r["value"])
        seeds_shown = False
        for label, points in sorted(groups.items()):
            xs = sorted(points)
            ax.plot(xs, [sum(points[x]) / len(points[x]) for x in xs], "o-", label=label)
            for x in xs:
                if len(points[x]) > 1:
                    dots = "each seed" if not seeds_shown else None
                    ax.scatter([x] * len(points[x]), points[x], s=14, alpha=0.6, color="gray", label=dots, zorder=3)
                    seeds_shown = True
        lost = sorted({_number(r[x_key]) for r in rows if not _finite(r["value"])})
        if lost:  # failed jobs: marked where they would have been
            top = max(r["value"] for r in done)
            ax.scatter(lost, [top] * len(lost), marker="x", s=60, color="red", label="failed", zorder=3)
        ax.scatter(
            [_number(best[x_key])],
            [best["value"]],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"best: {best['job']} ({best['value']:.4g})",
        )
        swept_values = {_number(r[x_key]): str(r[x_key]) for r in rows}
        if min(swept_values) > 0 and max(swept_values) / min(swept_values) >= 20:
            ax.set_xscale("log")
        ticks = sorted(swept_values)
        ax.set_xticks(ticks, [swept_values[t] for t in ticks])  # the values swept, as they were written
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(x_key)
    else:
        names = [r["job"] for r in done]
        bars = ax.bar(names, [r["value"] for r in done], color="tab:blue")
        bars[names.index(best["job"])].set_color("gold")
        bars[names.index(best["job"])].set_label(f"best: {best['job']} ({best['value']:.4g})")
        ax.set_xlabel("job")
        ax.tick_params(axis="x", labelrotation=30)
    values = [r["value"] for r in done]
    if min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_yscale("log")
        label_log_axis(ax.yaxis, min(values), max(values))
    ax.legend(fontsize="small", title="lines: mean over seeds" if numeric and "seed" in params and others else None)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} ({len(done)} of {len(rows)} jobs completed)")
    return fig


class SweepReport(Callback):
    """Hydra callback: the sweep report at the end of every multirun, and a non-zero exit if a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Sweepers may keep state under the output directory before any job creates it (Optuna's sqlite).
        if not config.get("dry_run"):
            Path(config.paths.output_dir).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if not sweep_dir.is_dir():
            return
        report = write_report(sweep_dir)
        end_sweep(sweep_dir, report)  # the sweep's MLflow parent runs, if its jobs logged to MLflow
        best = report["best"]
        line = f"sweep report: {sweep_dir / 'summary.md'} ({report['jobs']} jobs"
        line += f", best job {best['job']}: {best['metric']} {best['value']:.6g})" if best else ")"
        print(line, flush=True)
        if report["failed"]:
            for row in report["rows"]:
                if row["status"] not in FINISHED:
                    why = f": {row['error']}" if row["error"] else ""
                    print(f"error: job {row['job']} {row['status']}{why}", file=sys.stderr)
            where = sweep_dir / "summary.md"
            print(
                f"error: {report['failed']} of {report['jobs']} jobs did not finish (see {where}); the same command"
                " with resume=auto finishes the sweep",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
