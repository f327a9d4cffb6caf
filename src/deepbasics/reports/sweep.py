"""A multirun's report, written into its directory at the end of every sweep (``scripts/sweep_report.py <dir>``
rebuilds it): summary.csv, summary.md (the jobs ranked) and summary.png. Light: Hydra loads it for every run."""

from __future__ import annotations

import csv
import math
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from deepbasics.config.settings import SPLITS, number
from deepbasics.config.sweep_dir import FINISHED, HOW_TO_RUN, LAST, recorded_jobs
from deepbasics.errors import EXIT_FAILED, exit_with, one_line
from deepbasics.files import read_json
from deepbasics.reports.mlflow_runs import end_sweep

BOOKKEEPING = ("status", "job", "error", "run_dir")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the jobs' YAML: OmegaConf.load costs 27 ms a job


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job in job order, with the jobs the sweep recorded that a kill kept from starting."""
    jobs = [d for d in sweep_dir.iterdir() if (d / ".hydra" / "overrides.yaml").is_file()]
    rows = []
    for job in jobs:
        metrics = read_json(job / "metrics.json")
        if not metrics and (job / "metrics.json").is_file():  # cut short: named, never taken for a finished job
            why = "its metrics.json does not read back; the sweep's command with resume=auto writes it again"
            metrics = {"status": "damaged", "error": why}
        monitor = yaml.load((job / ".hydra" / "config.yaml").read_text(), LOADER).get("monitor") or {}
        row = {"job": job.name, **_overrides(yaml.load((job / ".hydra" / "overrides.yaml").read_text(), LOADER))}
        row["status"] = metrics.get("status") or ("interrupted" if (job / LAST).is_file() else "not started")
        row["metric"] = (metrics.get("monitor") or {}).get("metric") or str(monitor.get("metric", ""))
        row["value"] = (metrics.get("monitor") or {}).get("value") if row["status"] in FINISHED else None
        row |= {f"{stage}/{name}": v for stage in SPLITS for name, v in (metrics.get(stage) or {}).items()}
        rows.append(row | {"error": metrics.get("error", ""), "run_dir": str(job), "_mode": monitor.get("mode", "min")})
    started = {int(m.group()) for m in (re.match(r"\d+", job.name) for job in jobs) if m}
    for job_number, overrides in enumerate(recorded_jobs(sweep_dir)):
        if job_number not in started:
            metric = rows[0]["metric"] if rows else ""
            row = {"job": f"{job_number:02d} (no directory)", **_overrides(overrides), "status": "not started"}
            rows.append(row | {"metric": metric, "value": None, "error": "", "run_dir": "", "_mode": "min"})
    return sorted(
        rows, key=lambda r: (not r["job"][:1].isdigit(), int(re.match(r"\d*", r["job"]).group() or 0), r["job"])
    )


def _overrides(lines) -> dict[str, str]:
    """The overrides that say what a job is (not where, nor how it ran)."""
    pairs = (str(text).partition("=") for text in lines)
    what = {k.lstrip("+~"): v for k, _, v in pairs if not k.startswith(("hydra.", "paths."))}
    return {k: v for k, v in what.items() if k not in HOW_TO_RUN}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def ranks(rows: list[dict]) -> dict[int, int]:
    """Row index -> rank by the monitored value (1: the best); jobs without a value have none."""
    scored = [i for i, r in enumerate(rows) if _finite(r["value"])]
    maximize = bool(scored) and rows[scored[0]]["_mode"] == "max"
    return {i: rank for rank, i in enumerate(sorted(scored, key=lambda i: rows[i]["value"], reverse=maximize), 1)}


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else "" if value is None else str(value).replace("|", "\\|")


def write_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Write summary.csv (every column, in job order), summary.md (what every job shared, then the jobs ranked)
    and summary.png; return counts, the best row, the rows and the shared settings."""
    sweep_dir = Path(sweep_dir)
    rows = job_rows(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir} holds no job directories (with .hydra/overrides.yaml)")
    rank = ranks(rows)
    best = next((rows[i] for i, r in rank.items() if r == 1), None)
    columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("_mode", "error", "run_dir")]
    table = [{"best": "*" if rank.get(i) == 1 else "", "rank": rank.get(i, ""), **r} for i, r in enumerate(rows)]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["best", "rank", *columns, "error", "run_dir"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    metric, mode = rows[0]["metric"], rows[0]["_mode"]
    settings = [k for k in rows[0] if k not in (*BOOKKEEPING, "metric", "value", "_mode") and "/" not in k]
    varied = [k for k in settings if len({str(r.get(k)) for r in rows}) > 1]
    same = {k: rows[0][k] for k in settings if k not in varied and rows[0].get(k) is not None}
    shown = ["rank", *varied, "value", *(c for c in columns if "/" in c and c != metric), *BOOKKEEPING]
    failed = sum(r["status"] not in FINISHED for r in rows)
    lines = [f"# Sweep {sweep_dir}", ""]
    lines.append(f"{len(rows)} jobs, {len(rows) - failed} completed, {failed} not; monitored: {metric} ({mode}).")
    if best is not None:
        lines.append(f"Best (rank 1): job {best['job']}, {metric} = {_cell(best['value'])}.")
    if same:
        lines.append(f"The same in every job: {', '.join(f'{k}={v}' for k, v in same.items())}.")
    header = [f"{metric} ({mode})" if c == "value" else c for c in shown]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(shown)]
    order = sorted(range(len(table)), key=lambda i: (i not in rank, rank.get(i, 0), i))
    lines += ["| " + " | ".join(_cell(table[i].get(c)) for c in shown) + " |" for i in order]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    figure = summary_figure(rows, varied, metric)
    if figure is not None:
        figure.savefig(sweep_dir / "summary.png", dpi=110)
    return {"jobs": len(rows), "failed": failed, "best": best, "rows": rows, "same": same}


def summary_figure(rows: list[dict], params: list[str], metric: str):
    """The monitored value against the first numeric swept setting (a line per value of the others, seeds averaged,
    failed jobs a cross) or a bar per job, the best starred; None when no job has a value."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from deepbasics.reports.figures import label_log_axis

    done = [r for r in rows if _finite(r["value"])]
    if not done:
        return None
    ax = Figure(figsize=(6.5, 4.5), layout="constrained").subplots()
    best = min(done, key=lambda r: r["value"] * (-1 if r["_mode"] == "max" else 1))
    named = f"best: {best['job']} ({best['value']:.4g})"
    numeric = [p for p in params if p != "seed" and all(number(r.get(p)) is not None for r in rows)]
    if numeric:
        x_key, others = numeric[0], [p for p in params if p not in (numeric[0], "seed")]
        lines: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in done:
            label = ", ".join(f"{k}={r.get(k)}" for k in others) or ("mean over seeds" if "seed" in params else metric)
            lines[label][number(r[x_key])].append(r["value"])
        dots = "each seed"
        for label, points in sorted(lines.items()):
            ax.plot(sorted(points), [sum(points[x]) / len(points[x]) for x in sorted(points)], "o-", label=label)
            for x, values in sorted(points.items()):
                if len(values) > 1:
                    ax.scatter([x] * len(values), values, s=14, alpha=0.6, color="gray", label=dots, zorder=3)
                    dots = None
        lost = sorted({number(r[x_key]) for r in rows if not _finite(r["value"])})
        if lost:  # failed jobs, where they would have been
            ax.scatter(lost, [max(r["value"] for r in done)] * len(lost), marker="x", s=60, color="red", label="failed")
        star = {"marker": "*", "s": 260, "color": "gold", "edgecolors": "black", "zorder": 5}
        ax.scatter([number(best[x_key])], [best["value"]], label=named, **star)
        written = {number(r[x_key]): str(r[x_key]) for r in rows}
        if min(written) > 0 and max(written) / min(written) >= 20:
            ax.set_xscale("log")
        ax.set_xticks(sorted(written), [written[t] for t in sorted(written)])  # the values as they were written
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        bars = ax.bar([r["job"] for r in done], [r["value"] for r in done], color="tab:blue")
        bars[done.index(best)].set(color="gold", label=named)
        ax.tick_params(axis="x", labelrotation=30)
    values = [r["value"] for r in done]
    if min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_yscale("log")
        label_log_axis(ax.yaxis, min(values), max(values))
    ax.legend(fontsize="small", title="lines: mean over seeds" if numeric and "seed" in params and others else None)
    ax.set(xlabel=numeric[0] if numeric else "job", ylabel=metric)
    ax.set_title(f"{metric} ({len(done)} of {len(rows)} jobs completed)")
    return ax.figure


class SweepReport(Callback):
    """Hydra callback: the sweep report at the end of every multirun, and a non-zero exit if a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if not sweep_dir.is_dir():
            return
        try:  # Hydra would only warn about a failure here: the command must not end as if the report were there
            report = write_report(sweep_dir)
            end_sweep(sweep_dir, report)  # the sweep's MLflow parent runs, if its jobs logged to MLflow
        except Exception as err:
            exit_with(
                f"sweep {sweep_dir}: its report could not be written ({one_line(err)}); the jobs' own files are"
                " kept, and `.venv/bin/python scripts/sweep_report.py <sweep dir>` writes it again"
            )
        best = report["best"]
        best = f", best job {best['job']}: {best['metric']} {best['value']:.6g}" if best else ""
        print(f"sweep report: {sweep_dir / 'summary.md'} ({report['jobs']} jobs{best})", flush=True)
        if report["failed"]:
            for row in report["rows"]:
                if row["status"] not in FINISHED:
                    error = f": {row['error']}" if row["error"] else ""
                    print(f"error: job {row['job']} {row['status']}{error}", file=sys.stderr)
            failed = f"{report['failed']} of {report['jobs']} jobs did not finish (see {sweep_dir / 'summary.md'})"
            exit_with(f"{failed}; the same command with resume=auto finishes the sweep", EXIT_FAILED)
