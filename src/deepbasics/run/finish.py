"""The end of a run: final metrics of every split, model.pt, figures, the hparams tab and, last, metrics.json.

metrics.json is the commit mark: a run without a finished one is not done. Everything here depends only on
the final weights, the data and the config, so it runs the same after the fit and when a resumed run finds
its training done but its end cut short (a kill after the final checkpoint): a repaired run ends with the
files an uninterrupted one has, with the same numbers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from deepbasics.config.schema import LOSS_GAP, OPTIMUM_LOSS, PARAM_GAP
from deepbasics.config.sweep_dir import swept_keys
from deepbasics.files import atomic_write
from deepbasics.models.optimum import MAX_ROWS, final_report
from deepbasics.reports.events import event_writer
from deepbasics.reports.figures import LOSS_CURVES, curves_from_events, run_title, save_figures
from deepbasics.reports.metrics import by_stage, flat_settings, optimum_line, results_table, write_json
from deepbasics.reports.mlflow_runs import curves_of_run, log_run_files


def finish(
    cfg: DictConfig,
    run_dir: Path,
    module: L.LightningModule,
    datamodule,
    loggers: list,
    step: int,
    is_global_zero: bool = True,
    stopped: dict | None = None,
    best_checkpoint: str | None = None,
    optimum: dict | None = None,
) -> float:
    """Measure the final weights on every split, write the run's files (rank 0), return the monitored value.
    Under DDP every rank measures its shard (torchmetrics syncs), so every rank calls this."""
    module.eval()
    values = {}
    for split in datamodule.splits:
        values.update(module.measure(split, datamodule.slices(split)))
    if not is_global_zero:  # under DDP, the files are rank 0's to write
        return float(values[cfg.monitor.metric])
    return write_end(cfg, run_dir, module, datamodule, loggers, step, values, stopped, best_checkpoint, optimum)


def write_end(
    cfg: DictConfig,
    run_dir: Path,
    module: L.LightningModule,
    datamodule,
    loggers: list,
    step: int,
    values: dict,
    stopped: dict | None = None,
    best_checkpoint: str | None = None,
    optimum: dict | None = None,
    curves: dict | None = None,
    layouts=None,
    report: bool = True,
) -> float:
    """The run's end-of-run files from its final metrics ``values`` ({"<split>/<name>": value}): test
    points and the optimum's gap into the loggers, model.pt, figures, the hparams tab and metrics.json
    last; the monitored value. ``curves`` (the loss curves, read back from TensorBoard when None) and
    ``layouts`` (figure layouts, shared where axes coincide) come from a group of runs trained together;
    such a group prints its own lines (one per validation for all its jobs), so its runs do not ``report``
    each."""
    stages = by_stage(values)
    monitored = float(values[cfg.monitor.metric])
    if "test" in stages:  # train and val were logged at this step while training
        for logger in loggers:
            logger.log_metrics({f"test/{k}": v for k, v in stages["test"].items()}, step=step)
    x, y = datamodule.splits["train"]
    net, loss_fn, most = module.net, module.loss_fn, cfg.get("optimum_max_rows", MAX_ROWS)
    optimum = final_report(net, x.to(module.device), y.to(module.device), loss_fn, optimum, most)
    if optimum and "loss" in optimum:
        gaps = {OPTIMUM_LOSS: optimum["loss"], LOSS_GAP: optimum["loss_gap"], PARAM_GAP: optimum["param_gap"]}
        for logger in loggers:
            logger.log_metrics(gaps, step=step)
    # The tutorials' model.pt: the plain net's state_dict, loadable into the tutorial's own class.
    atomic_write(run_dir / "model.pt", lambda f: torch.save(module.net.state_dict(), f))
    split = "test" if "test" in datamodule.splits else "train"
    evaluated = (split, *datamodule.splits[split])
    tensorboard = log_hparams(cfg, stages, loggers, swept_keys(run_dir.parent))
    tracked = [logger for logger in loggers if isinstance(logger, L.pytorch.loggers.MLFlowLogger)]
    if not keeps_curves(loggers):
        curves = None
    elif curves is None:  # a stacked group passes them from its history
        curves = curves_from_events(tensorboard) if tensorboard else curves_of_run(tracked[0], LOSS_CURVES)
    epochs = datamodule.epochs_done(step)
    title = run_title(cfg, run_dir, monitored)
    save_figures(run_dir, module, x, y, step, loggers, optimum, curves, evaluated, layouts, epochs, title)
    for logger in tracked:
        log_run_files(logger, run_dir)
    for logger in loggers:  # Lightning finalized them when fit ended; the end phase logged more since
        logger.finalize("success")
    status = "stopped_early" if stopped else "completed"
    write_json(
        run_dir / "metrics.json",
        {
            **identity(cfg, run_dir, status),
            "epochs": epochs,
            **({"stopped": stopped} if stopped else {}),
            "monitor": {"metric": cfg.monitor.metric, "value": monitored},
            **stages,
            "optimum": optimum,
            "best_checkpoint": best_checkpoint,
        },
    )
    if report:
        _print_report(cfg, stages, optimum, run_dir, epochs, stopped)
    return monitored


def keeps_curves(loggers: list) -> bool:
    """Whether a run's loggers keep its loss curves, which loss.png shows as they were logged: TensorBoard's
    events, else MLflow's metric history; no loss.png without either, under any launcher."""
    kinds = (L.pytorch.loggers.TensorBoardLogger, L.pytorch.loggers.MLFlowLogger)
    return any(isinstance(logger, kinds) for logger in loggers)


def identity(cfg: DictConfig, run_dir: Path, status: str) -> dict:
    return {"experiment": cfg.get("name"), "seed": cfg.get("seed"), "status": status, "run_dir": str(run_dir)}


def log_hparams(cfg: DictConfig, stages: dict, loggers: list, swept: list[str] = ()) -> Path | None:
    """TensorBoard's HParams tab for this run: its settings beside its own final points (train/*, val/*,
    test/*), no copies. ``swept``: the config keys its sweep varies, which the tab lists, marked as
    differing. (CSV and MLflow got the settings at the start, ``start_logs``, and hold the same final
    points: nothing is logged twice.) Returns the TensorBoard directory, if there is one."""
    settings = flat_settings(cfg)
    varied = [name for name in (key.removeprefix("model.") for key in swept) if name in settings]
    # the monitored metric first, then the held-out splits' metrics
    order = {"test": 0, "val": 1, "train": 2}
    tags = [f"{stage}/{name}" for stage, values in stages.items() for name in values]
    tags.sort(key=lambda tag: (tag != cfg.monitor.metric, order[tag.split("/")[0]]))
    directory = None
    for logger in loggers:
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            with event_writer(logger) as writer:
                for summary in tensorboard_hparams(settings, varied, tags):
                    writer.add_summary(summary)
                writer.flush()  # figures/loss.png reads these events back
            directory = Path(logger.log_dir)
    return directory


def tensorboard_hparams(settings: dict, varied: list[str], tags: list[str]) -> list:
    """The HParams plugin's summaries (torch's): the run's session with all its settings and, for a job of
    a sweep, the experiment rewritten to open on the comparison. TensorBoard shows the first five of an
    experiment's hparams, differing ones first, the rest by name: so a sweep's experiment lists its swept
    settings alone, marked as differing (what every job shares is in summary.md's header and each job's
    hparams.yaml), and as metrics the run's own final points (the last value of each tag, monitored
    first), so no one-point charts are written. A run of its own writes no experiment: TensorBoard then
    works out which settings differ across the runs it is shown."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams

    experiment, start, end = hparams(settings, {})
    if not varied:
        return [start, end]
    plugin = experiment.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
    infos = {info.name: info for info in content.experiment.hparam_infos}
    del content.experiment.hparam_infos[:]
    for name in varied:
        infos[name].differs = True
        content.experiment.hparam_infos.append(infos[name])
    del content.experiment.metric_infos[:]
    content.experiment.metric_infos.extend(api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in tags)
    plugin.content = content.SerializeToString()
    return [experiment, start, end]


def _print_report(cfg: DictConfig, stages: dict, optimum: dict | None, run_dir: Path, epochs: int, stopped) -> None:
    from rich.console import Console

    console = Console()
    ran = f"stopped early at epoch {epochs}/{cfg.epochs}: {stopped['reason']}" if stopped else f"{cfg.epochs} epochs"
    console.print(f"{cfg.name}, seed {cfg.seed}, {ran}", soft_wrap=True)
    console.print(results_table(stages))
    if optimum:
        console.print(optimum_line(optimum), soft_wrap=True)
    console.print(f"run directory: {run_dir}", soft_wrap=True)
