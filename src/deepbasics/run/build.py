"""Config -> the run's parts: the DataModule, the LightningModule checked against its data, and the Trainer
with its callbacks, loggers and atomic checkpoint writes."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from deepbasics.compat import lightning_epochs_done
from deepbasics.config.schema import NetSpec, Schedule
from deepbasics.errors import ConfigError, one_line
from deepbasics.models.optimum import MAX_ROWS, OptimumGap, has_optimum
from deepbasics.reports.events import fast_checksums
from deepbasics.reports.figures import run_title
from deepbasics.reports.metrics import flat_settings
from deepbasics.run.callbacks import ConsoleLog, EpochProgressBar, Figures, LastCheckpoint, RunState
from deepbasics.run.checkpoints import AtomicCheckpointIO

# Lightning's advice for DataLoader-fed training does not apply to one in-memory batch per epoch.
for _message in (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",  # with mini-batches, log_every counts passes
    ".*LeafSpec.*",
    ".*length of `list` across ranks is zero.*",
    ".*Checkpoint directory .* exists and is not empty.*",  # a resumed run writes where it left off
    ".*sync_dist=True.*",  # the values logged are torchmetrics results, already synced across ranks
):
    warnings.filterwarnings("ignore", message=_message)
# Lightning's own console handler repeats its start-up notes (accelerators, tips); the run's log file keeps them.
for _handler in logging.getLogger("lightning").handlers:
    _handler.setLevel(logging.WARNING)


def _instantiate(conf: DictConfig, key: str = "", **kwargs):
    """hydra's instantiate, with our ConfigError (or Hydra's complaint) surfacing as a ConfigError; ``key``:
    where the config sits (data, model, trainer), to name an option the class does not take."""
    try:
        return instantiate(conf, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        name = str(conf.get("_target_", "")).rsplit(".", 1)[-1]
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if unknown and key:
            raise ConfigError(
                f"{key}.{unknown.group(1)} is not an option of {name}, which {key} is here; remove it, or pick a"
                f" {key} group that has it (--help lists them)"
            ) from None
        if "gpu" in str(cause).lower() and not torch.cuda.is_available():
            raise ConfigError(
                f"{key or name}: {cause}; torch sees no GPU here (a CPU build, or no driver): use trainer=cpu, or"
                " install torch's CUDA build (README, A CUDA build of torch)"
            ) from None
        raise ConfigError(f"{key + ': ' if key else ''}{one_line(err)}") from None


def build_datamodule(
    cfg: DictConfig, standardization: dict | None = None, schedule: Schedule | None = None
) -> L.LightningDataModule:
    """The configured data, set up, to be served on ``schedule`` (for training); ``standardization`` (a
    checkpoint's) replaces statistics of its own."""
    datamodule = _instantiate(cfg.data, "data", _convert_="all")
    datamodule.standardization = standardization
    datamodule.schedule = schedule
    datamodule.setup()
    if cfg.get("overfit_rows") is not None:
        datamodule.overfit(cfg.overfit_rows)
    return datamodule


def build_model(cfg: DictConfig, datamodule) -> L.LightningModule:
    """The configured module, checked against the data it is about to train on."""
    # The net's input width comes from the data (as LightningCLI's link_arguments links them); a width
    # given in the config must agree with it.
    net = NetSpec.applicable(OmegaConf.to_container(cfg.model.net, resolve=True))
    wanted = net.get("in_features")
    if wanted is None:
        net["in_features"] = datamodule.in_features
    elif wanted != datamodule.in_features:
        raise ConfigError(
            f"model.net.in_features={wanted} but the data has {datamodule.in_features} features;"
            f" set model.net.in_features={datamodule.in_features}, or leave it out (the data sets it)"
        )
    # _recursive_=False: model.scheduler's _target_ is built later, around the optimizer
    model_cfg = cfg.model.copy()
    with open_dict(model_cfg):
        model_cfg.net = net  # replaced whole (instantiate's keyword arguments would merge into it)
    model = _instantiate(model_cfg, "model", _convert_="all", _recursive_=False)
    classes = model.hparams.get("num_classes")
    outputs = model.hparams.net.get("out_features", 1)
    if classes is not None and outputs != classes:
        raise ConfigError(f"model.net.out_features={outputs} but model.num_classes={classes}; make them equal")
    if model.is_classifier:
        _check_labels(datamodule, classes)
    check_monitors(cfg, model, datamodule)
    return model


def check_monitors(cfg: DictConfig, model: L.LightningModule, datamodule) -> None:
    """monitor.metric, and any callback's monitor, must name a metric the run logs while it trains (a split's
    loss or one of its metrics, of the train and val splits the data has): found before the first epoch,
    not as Lightning's error after training."""
    logged = [f"{split}/{name}" for split in ("train", "val") if datamodule.has(split)
              for name in ("loss", *model.make_metrics())]  # fmt: skip
    # the position (ModelCheckpoint(monitor="step", mode="max") keeps the latest), and a plateau
    # schedule's step loss
    plateau = "Plateau" in str((cfg.model.get("scheduler") or {}).get("_target_", ""))
    logged += ["step", "epoch"] + (["train/batch_loss"] if plateau else [])
    monitors = {"monitor.metric": cfg.monitor.metric}
    for name, conf in (cfg.get("callbacks") or {}).items():
        if OmegaConf.is_dict(conf) and conf.get("monitor") is not None:
            monitors[f"callbacks.{name}.monitor"] = conf.monitor
    for key, metric in monitors.items():
        if metric in logged:
            continue
        split = str(metric).split("/")[0]
        if split in ("train", "val") and not datamodule.has(split):
            raise ConfigError(f"{key}={metric} but the data has no {split} split; monitor train/loss instead")
        if split == "test":
            reason = "test metrics are measured once, after training"
        else:
            reason = "it is not a metric this run logs"
        raise ConfigError(f"{key}={metric}: {reason}; pick one of {', '.join(logged)}")


def _check_labels(datamodule, classes: int | None) -> None:
    """Binary classifiers need labels 0 and 1; a classifier of ``classes`` classes 0..classes-1."""
    allowed = torch.arange(classes or 2, dtype=torch.float32)
    if classes:
        kind = f"a {classes}-class classifier needs labels 0 to {classes - 1}"
    else:
        kind = "a binary classifier needs labels 0 and 1"
    for split, (_, y) in datamodule.splits.items():
        wrong = y[~torch.isin(y, allowed)]
        if len(wrong):
            raise ConfigError(
                f"data.{split} has label {wrong[0].item():g}; {kind} (for more classes: model=multiclass"
                f" model.num_classes=<classes>; else map them in the data, or use a regression model)"
            )
    labels = datamodule.splits["train"][1].unique().tolist()
    if len(labels) < 2:
        wanted = "of at least two classes" if classes else "of both 0 and 1"
        raise ConfigError(f"data.train labels are all {labels[0]:g}; a classifier needs examples {wanted}")


def live_progress(progress: str) -> bool:
    """``progress=auto``: a live bar when stdout is a terminal, the plain lines otherwise (CI, pipes, logs).
    A terminal that reports no size (a 0x0 pty: `script`, `docker -t`, some CI runners) cannot draw a bar,
    which would show nothing at all: it gets the lines."""
    if progress not in ("auto", "bar", "lines"):
        raise ConfigError(f"progress={progress!r}: use auto (a bar on a terminal, lines otherwise), bar or lines")
    if progress == "lines" or (progress == "auto" and not sys.stdout.isatty()):
        return False
    try:
        columns = os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):  # not a terminal (progress=bar into a pipe): the bar draws at its default width
        return True
    return columns > 0


def build_loggers(cfg: DictConfig, run_dir: Path, start_step: int = 0) -> list:
    """The configured loggers of a run's training from ``start_step``, writing into ``run_dir`` (never where
    a copied config points)."""
    fast_checksums()
    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        extra = {"save_dir": str(run_dir)}
        if conf._target_.endswith("TensorBoardLogger"):
            # A resumed run hides what the interrupted one logged after its checkpoint, and a job of a sweep
            # that starts again (killed before its first checkpoint) all of it: each curve is one line.
            earlier = list((run_dir / conf.get("name", "")).glob("**/events.out.tfevents.*"))
            if start_step:
                extra["purge_step"] = start_step + 1
            elif earlier:
                extra["purge_step"] = 0
            after_event_files(earlier)
        elif conf._target_.endswith("MLFlowLogger"):
            from deepbasics.reports.mlflow_runs import logger_kwargs

            extra.update(logger_kwargs(conf, run_dir))
        loggers.append(_instantiate(conf, **extra))
    return loggers


def start_logs(loggers: list, cfg: DictConfig, run_dir: Path) -> None:
    """What the loggers get when training starts (or continues): the run's settings, once and flat
    (``flat_settings``; not Lightning's nested hparams, which the modules keep out of the loggers), and
    for MLflow the run opened, tagged and nested under its sweep's."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # the loggers write from rank 0
        return
    settings = flat_settings(cfg)
    for logger in loggers:
        if isinstance(logger, L.pytorch.loggers.MLFlowLogger):
            from deepbasics.reports.mlflow_runs import start_run

            start_run(logger, settings, run_dir)
        else:
            logger.log_hyperparams(settings)
        logger.save()


def after_event_files(earlier: list[Path]) -> None:
    """Wait, if need be, until a new event file sorts after ``earlier`` ones. TensorBoard reads a run's
    event files in name order, which starts with the second the file was made; a resume's purge of what the
    interrupted run logged after its checkpoint works only if its file comes later. A resume within the
    same second as the first start (a quick kill) would otherwise sort before it, by process id."""
    stamps = [int(p.name.split(".")[3]) for p in earlier if p.name.split(".")[3].isdigit()]
    if stamps:
        delay = max(stamps) + 1 - time.time()
        if 0 < delay <= 2:  # more: a file from a clock ahead of this one (another node); no waiting on it
            time.sleep(delay)


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    """The configured callbacks (cfg.callbacks); ModelCheckpoint saves into ``run_dir``/checkpoints."""
    callbacks = []
    for name, conf in (cfg.get("callbacks") or {}).items():
        if conf.get("dirpath") is not None:
            raise ConfigError(
                f"callbacks.{name}.dirpath={conf.dirpath}: checkpoints go into the run directory's checkpoints/"
                " (resume and evaluate look there); leave dirpath unset"
            )
        # The directory is given here, not by the config: the config travels inside checkpoints, and a
        # resumed or evaluated run must never write into the directory of the run it was copied from.
        extra = {"dirpath": str(run_dir / "checkpoints")} if is_model_checkpoint(conf) else {}
        callbacks.append(_instantiate(conf, **extra))
    return callbacks


def is_model_checkpoint(conf: DictConfig) -> bool:
    """Whether a callback's config builds a ModelCheckpoint (or a subclass)."""
    from hydra.utils import get_class

    try:
        return issubclass(get_class(conf._target_), L.pytorch.callbacks.ModelCheckpoint)
    except Exception:  # not a class: instantiating it says what is wrong
        return False


def build_trainer(
    cfg: DictConfig, schedule: Schedule, run_dir: Path, datamodule, resumed: dict | None = None
) -> L.Trainer:
    """The run's Trainer; ``resumed``: the checkpoint it continues (its loggers hide what the interrupted
    run logged after it, and its schedule counts the Lightning epochs it finished)."""
    start = (lightning_epochs_done(resumed), resumed["global_step"]) if resumed else (0, 0)
    bar = live_progress(cfg.get("progress", "auto"))
    callbacks = [EpochProgressBar(cfg.name) if bar else ConsoleLog()]
    # Lightning calls every callback at every step, so those with nothing to do are left out.
    gap = OptimumGap(cfg.get("optimum_max_rows", MAX_ROWS)) if has_optimum(cfg.model.net) else None
    if gap is not None:
        callbacks.append(gap)
    if cfg.figure_every:
        callbacks.append(Figures(cfg.figure_every, gap, run_title(cfg, run_dir)))
    callbacks.append(RunState(OmegaConf.to_container(cfg, resolve=True)))
    callbacks += build_callbacks(cfg, run_dir)
    loggers = build_loggers(cfg, run_dir, start[1])
    if cfg.model.get("scheduler") and loggers:  # the rate at each Lightning epoch's start
        callbacks.append(L.pytorch.callbacks.LearningRateMonitor(logging_interval="epoch"))
    callbacks.append(LastCheckpoint())
    profiler = {}
    if cfg.trainer.get("profiler"):  # its report goes into this run's directory (debug=profiler)
        profiler["profiler"] = _instantiate(cfg.trainer.profiler, dirpath=str(run_dir))
    return lightning_trainer(cfg, schedule, run_dir, callbacks, loggers, datamodule, bar, resumed=start, **profiler)


def lightning_trainer(
    cfg: DictConfig,
    schedule: Schedule,
    root: Path,
    callbacks: list,
    loggers: list,
    datamodule,
    bar: bool = False,
    checkpoint_io=None,
    resumed: tuple[int, int] = (0, 0),
    **extra,
) -> L.Trainer:
    """``cfg.trainer`` on the tutorial-epoch schedule of ``datamodule`` with these callbacks and loggers (a
    run's, or a stacked group's, whose root is its sweep directory)."""
    full_batch = datamodule.batch_size is None
    trainer = _instantiate(
        cfg.trainer,
        "trainer",
        **schedule.trainer_kwargs(None if full_batch else datamodule.steps_per_epoch, resumed),
        **extra,
        enable_progress_bar=bar,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(root),
        plugins=[checkpoint_io or AtomicCheckpointIO()],
    )
    # deterministic=True also fills every new tensor with NaN to expose reads of uninitialised memory,
    # which costs these tiny nets a quarter of their step time; the algorithms stay deterministic.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return trainer
