"""The end of a run: every split's final metrics, model.pt, figures, the HParams tab and last metrics.json, the commit
mark. It depends only on the final weights and data, so a resume after a kill cut it short runs it the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from deepbasics.config.sweep_dir import swept_keys
from deepbasics.data.in_memory import split_names, whole_splits
from deepbasics.files import atomic_write
from deepbasics.models.optimum import final_report, optimum_points
from deepbasics.reports.figures import curves_from_events, event_writer, run_title, save_figures
from deepbasics.reports.metrics import by_stage, flat_settings, optimum_line, results_table, write_json
from deepbasics.reports.mlflow_runs import log_run_files
from deepbasics.run.callbacks import epochs_done, write
from deepbasics.run.predict import ask


@dataclass
class Run:
    """The plain values a run's writers need, read once from its config by the task function."""

    dir: Path
    name: str
    seed: int
    epochs: int
    monitor: str
    config: dict = field(repr=False)
    settings: dict = field(repr=False)
    swept: dict = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: DictConfig) -> Run:
        run_dir, config = Path(cfg.paths.run_dir), OmegaConf.to_container(cfg, resolve=True)
        swept = {key: OmegaConf.select(cfg, key) for key in swept_keys(run_dir.parent)}
        swept = {k: v for k, v in swept.items() if isinstance(v, (int, float, str, bool))}
        return cls(run_dir, cfg.name, cfg.seed, cfg.epochs, cfg.monitor.metric, config, flat_settings(cfg), swept)

    def identity(self, status: str) -> dict:
        return {"experiment": self.name, "seed": self.seed, "status": status, "run_dir": str(self.dir)}


def finish(run: Run, trainer: L.Trainer, module, datamodule, stopped=None, best_checkpoint=None, optimum=None):
    """Measure the final weights on every split, write the run's files (rank 0), return the monitored
    value. Under DDP every rank measures its shard (torchmetrics syncs), so every rank calls this."""
    module.eval()
    splits, metrics = whole_splits(datamodule), trainer.callback_metrics
    if splits is not None:
        values = module.measure("train", splits.batches("train"))
    else:  # the last epoch's, over its batches
        values = {k: v for k, v in metrics.items() if k.startswith("train/") and "batch" not in k}
    has = split_names(datamodule)
    last_validated = trainer.global_step and epochs_done(trainer) % trainer.check_val_every_n_epoch == 0
    if "val" in has and last_validated and "val/loss" in metrics:  # its values are the final model's
        values |= {k: v for k, v in metrics.items() if k.startswith("val/")}
    elif "val" in has:  # logged at the last step, as test is
        values |= (trainer.validate(module, datamodule=datamodule, verbose=False) or [{}])[0]
    if "test" in has:
        values |= (trainer.test(module, datamodule=datamodule, verbose=False) or [{}])[0]
    if not trainer.is_global_zero:  # under DDP, the files are rank 0's to write
        return float(values[run.monitor])
    return write_end(
        run, module, splits, trainer.loggers, trainer.global_step, values, stopped, best_checkpoint, optimum
    )


def write_end(
    run: Run,
    module,
    data,
    loggers: list,
    step: int,
    values: dict,
    stopped: dict | None = None,
    best_checkpoint: str | None = None,
    optimum: dict | None = None,
    layouts: dict | None = None,
) -> float:
    """The end-of-run files from the final ``values`` ({"<split>/<name>": value}) and the ``data``'s whole splits if
    it holds them (``WholeSplits``, else None): the optimum's gap in the loggers, model.pt, figures, the HParams tab,
    metrics.json last; the monitored value. ``layouts`` come from a stacked group, which prints its own lines."""
    splits = data.splits if data is not None else None
    train = splits["train"] if splits else None
    evaluated = None if splits is None else ("test", *splits["test"]) if "test" in splits else ("train", *train)
    stages = by_stage(values)
    monitored = float(values[run.monitor])
    epochs = stopped["epoch"] if stopped else run.epochs
    if train is not None:
        optimum = final_report(module, *train, optimum)
        write(loggers, optimum_points(optimum), step)
    # The tutorials' model.pt: the plain net's state_dict, loadable into the tutorial's own class.
    atomic_write(run.dir / "model.pt", lambda f: torch.save(module.net.state_dict(), f))
    tensorboard = log_hparams(run, stages, loggers)  # loss.png draws TensorBoard's curves: without it none
    curves = curves_from_events(tensorboard) if tensorboard is not None else None
    if train is not None or curves is not None:
        title = run_title(run.name, run.swept, (run.monitor, monitored))
        save_figures(run.dir, module, train, loggers, step, epochs, optimum, curves, evaluated, layouts, title)
    for logger in loggers:  # Lightning finalized them when fit ended; the end phase logged more since
        if isinstance(logger, L.pytorch.loggers.MLFlowLogger):
            log_run_files(logger, run.dir)
        logger.finalize("success")
    learned, question = _parameters(module.net), run.config.get("question")
    if question is not None:  # the tutorials' last cell: model(x) for new inputs
        question = ask(module.eval(), question, data.standardization if data is not None else None)
    record = {"epochs": epochs} | ({"stopped": stopped} if stopped else {})
    record |= {"monitor": {"metric": run.monitor, "value": monitored}, **stages, "optimum": optimum}
    record |= ({"parameters": learned} if learned else {}) | ({"question": question} if question else {})
    record |= {"best_checkpoint": best_checkpoint}
    write_json(run.dir / "metrics.json", run.identity("stopped_early" if stopped else "completed") | record)
    if layouts is None:  # the end-of-run lines (a stacked group, which passes its layouts, prints its own)
        console = Console()
        ran = (
            f"stopped early at epoch {epochs}/{run.epochs}: {stopped['reason']}" if stopped else f"{run.epochs} epochs"
        )
        console.print(f"{run.name}, seed {run.seed}, {ran}", soft_wrap=True)
        console.print(results_table(stages))
        if learned:  # as the tutorials print list(model.parameters())
            shown = (f"{name} {np.round(np.asarray(v, dtype=float), 4).tolist()}" for name, v in learned.items())
            console.print("learned:", ", ".join(shown), soft_wrap=True)  # 4 decimals, no float32 digits beyond
        if optimum:
            console.print(optimum_line(optimum), soft_wrap=True)
        if question:
            answer = np.round(question["predictions"], 4).tolist()
            console.print(f"model({question['inputs']}) = {answer}", soft_wrap=True)
        if run.config.get("note"):  # a recipe's remark (conf/experiment)
            console.print(run.config["note"], soft_wrap=True)
        console.print(f"run directory: {run.dir}", soft_wrap=True)
    return monitored


def _parameters(net: torch.nn.Module) -> dict | None:
    """A small net's learned parameters, as the tutorials print them; None for a net of more than 20 numbers."""
    params = dict(net.named_parameters())
    if sum(p.numel() for p in params.values()) > 20:
        return None
    return {name: p.detach().cpu().tolist() for name, p in params.items()}


def log_hparams(run: Run, stages: dict, loggers: list) -> Path | None:
    """TensorBoard's HParams tab; returns its directory. A run's session holds its settings; a sweep's job also writes
    the sweep's experiment: swept settings (TensorBoard shows the first five) and metric tags, monitored first (values
    from the curves: nothing logged twice). A run of its own writes none: TensorBoard finds what differs."""
    from torch.utils.tensorboard.summary import hparams

    order = ("test", "val", "train")
    tags = sorted(
        (f"{stage}/{name}" for stage, names in stages.items() for name in names),
        key=lambda tag: (tag != run.monitor, order.index(tag.split("/")[0]), tag),
    )
    swept = {key.removeprefix("model."): value for key, value in run.swept.items()}
    experiment = hparams(swept, dict.fromkeys(tags, 0.0))[0]
    session = hparams(run.settings, {})[1:]
    directory = None
    for logger in loggers:
        if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            with event_writer(logger) as writer:
                for summary in [experiment, *session] if run.swept else session:
                    writer.add_summary(summary)
                writer.flush()  # figures/loss.png reads these events back
            directory = Path(logger.log_dir)
    return directory
