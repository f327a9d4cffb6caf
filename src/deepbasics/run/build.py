"""A run's parts from their configs: the DataModule (any LightningDataModule), the LightningModule checked
against its data, the loggers, the callbacks and the Trainer (from the run's config, for its schedule)."""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
import time
import typing
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from deepbasics.data.in_memory import WholeSplits, split_names, whole_splits
from deepbasics.errors import ConfigError, one_line
from deepbasics.reports.mlflow_runs import logger_kwargs, start_run
from deepbasics.run.checkpoints import AtomicCheckpointIO
from deepbasics.run.predict import ask

log = logging.getLogger(__name__)
# Lightning's advice for DataLoader-fed training, and its own use of a deprecated torch name
for _message in (
    "does not have many workers",
    "smaller than the logging interval",
    "LeafSpec",
    "sync_dist=True",
    "Checkpoint directory .* exists and is not empty",
    "length of `list` across ranks is zero",
):
    warnings.filterwarnings("ignore", message=f".*{_message}.*")
# Lightning's own console handler repeats its start-up notes (accelerators, tips); the run's log file keeps them.
for _handler in logging.getLogger("lightning").handlers:
    _handler.setLevel(logging.WARNING)
logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event reader's notes, for each run read back
WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "null"}


def build(conf: DictConfig, key: str = "", **kwargs):
    """Hydra's instantiate; a failure is one line naming where its config sits (data, model.net, trainer; of nested
    parts, the innermost). Values are first checked against the plain types (int, float, bool, str, None) the class's
    arguments are annotated with: a word where a number goes fails here, not at the first epoch."""
    try:
        cls = get_class(conf._target_)
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # no class, or annotations that do not resolve: instantiating it says what is wrong
        hints = {}
    for name, value in conf.items():
        allowed = typing.get_args(hints.get(name)) or (hints.get(name),)
        if not all(kind in WORDS for kind in allowed):  # not a plain type: the class checks for itself
            continue
        fits = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not (fits or (float in allowed and type(value) is int)):
            expected = " or ".join(WORDS[kind] for kind in allowed)
            raise ConfigError(f"{key}.{name}={value!r} must be {expected} ({cls.__name__}'s {name})")
    try:
        return instantiate(conf, **kwargs)
    except InstantiationException as err:
        while isinstance(err.__cause__, InstantiationException):  # a part the part being built builds
            err = err.__cause__
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):
            raise cause from None
        target = re.search(r"target '([\w.]+)'", str(err))
        name = target.group(1) if target else str(conf.get("_target_", ""))
        where, short = _key_of(conf, name, key) or key or name, name.rsplit(".", 1)[-1]
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if unknown:
            raise ConfigError(
                f"{where}.{unknown.group(1)} is not an option of {short}, which {where} is here;"
                " remove it, or pick a group that has it (--help lists them)"
            ) from None
        if "gpu" in str(cause).lower() and not torch.cuda.is_available():
            raise ConfigError(
                f"{where}: {cause}; torch sees no GPU here (a CPU build, or no driver): use"
                " trainer=cpu, or install torch's CUDA build (README)"
            ) from None
        raise ConfigError(f"{where} ({short}): {one_line(cause)}; check its arguments") from None


def _key_of(conf, target: str, key: str) -> str | None:
    """Where in ``conf`` (itself at ``key``) the part whose _target_ is ``target`` sits."""
    if OmegaConf.is_dict(conf):
        if conf.get("_target_") == target:
            return key
        for name, value in conf.items():
            found = _key_of(value, target, f"{key}.{name}" if key else str(name))
            if found:
                return found
    return None


def build_datamodule(conf: DictConfig, standardization: dict | None = None) -> L.LightningDataModule:
    """The configured data; ``standardization`` (a checkpoint's) replaces statistics of its own."""
    datamodule = build(conf, "data", _convert_="all")
    if not isinstance(datamodule, L.LightningDataModule):
        raise ConfigError(f"data: {type(datamodule).__name__} is not a LightningDataModule; name one in data._target_")
    if isinstance(datamodule, WholeSplits):
        datamodule.standardization = standardization
    return datamodule


def input_width(datamodule: L.LightningDataModule) -> int:
    """Input features: the training split's width, or the first batch's (the run's random draws do not move)."""
    splits = whole_splits(datamodule)
    if splits is not None:
        return splits.splits["train"][0].shape[1]
    with torch.random.fork_rng():
        datamodule.prepare_data()
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
    return int((batch[0] if isinstance(batch, (tuple, list)) else batch).shape[-1])


def build_model(conf: DictConfig, datamodule: L.LightningDataModule) -> L.LightningModule:
    """The configured module for this data: a null ``model.net.in_features`` comes from the data (as LightningCLI links
    arguments); its optimizer and scheduler are built here once, so a bad value fails before training."""
    config = OmegaConf.to_container(conf, resolve=True)
    net = config.get("net") or {}
    if "in_features" in net:
        width = input_width(datamodule)
        if net["in_features"] not in (None, width):
            raise ConfigError(
                f"model.net.in_features={net['in_features']} but the data has {width} features; set"
                f" model.net.in_features={width}, or null (the data sets it)"
            )
        net["in_features"] = width
    model = build(OmegaConf.create(config), "model", _convert_="all", _recursive_=False)
    for part in ("optimizer", "scheduler"):
        if (model.hparams.get(part) or {"_partial_": True}).get("_partial_") is not True:
            raise ConfigError(f"model.{part} is built by the module around its parameters: add _partial_: true")
    part = "optimizer"
    try:  # the optimizer, and the scheduler around it
        optimizer, part = instantiate(model.hparams.optimizer)(model.parameters()), "scheduler"
        if model.hparams.get("scheduler"):
            instantiate(model.hparams.scheduler)(optimizer)
    except Exception as err:
        short = str(model.hparams[part]["_target_"]).rsplit(".", 1)[-1]
        raise ConfigError(f"model.{part} ({short}): {one_line(err.__cause__ or err)}; check its arguments") from None
    splits = whole_splits(datamodule)
    if splits is None:
        model.batch_metrics = True  # no whole training split to measure: the epoch's batches
        log.info(
            f"{type(datamodule).__name__} does not hold its splits in memory (data.in_memory.WholeSplits):"
            " train metrics are each epoch's over its batches; no fit figure and no closed-form optimum"
        )
    elif model.is_classifier:
        check_labels(splits.splits, getattr(model, "num_classes", None))
    return model


def check_labels(splits: dict, classes: int | None) -> None:
    """Binary classifiers need labels 0 and 1; a classifier of ``classes`` classes 0..classes-1."""
    need = f"a {classes}-class classifier needs labels 0 to {classes - 1}" if classes else "a binary classifier"
    need += "" if classes else " needs labels 0 and 1"
    for split, (_, y) in splits.items():
        wrong = y[~torch.isin(y, torch.arange(classes or 2, dtype=torch.float32))]
        if len(wrong):
            raise ConfigError(
                f"data.{split} has label {wrong[0].item():g}; {need} (for more classes: model=multiclass"
                " model.num_classes=<classes>; else map them in the data, or use a regression model)"
            )
    labels = splits["train"][1].unique().tolist()
    if len(labels) < 2:
        wanted = "of at least two classes" if classes else "of both 0 and 1"
        raise ConfigError(f"data.train labels are all {labels[0]:g}; a classifier needs examples {wanted}")


def check_before_training(cfg: DictConfig, model: L.LightningModule, datamodule) -> None:
    """Every monitored name (monitor.metric, a callback's monitor) must be one the run logs while training (a split's
    loss or metric, of the data's splits): caught before the first epoch, not as Lightning's error after it. So must
    a ``question``, which the run's end answers: asked of a copy of the untrained net (its modes stay as they are)."""
    if cfg.get("question") is not None:
        ask(copy.deepcopy(model).eval(), cfg.question)
    callbacks = {name: part for name, part in (cfg.get("callbacks") or {}).items() if OmegaConf.is_dict(part)}
    monitors = {"monitor.metric": cfg.monitor.metric}  # first: the callbacks' default to it
    monitors |= {f"callbacks.{name}.monitor": part.monitor for name, part in callbacks.items() if part.get("monitor")}
    plateau = "Plateau" in str((cfg.model.get("scheduler") or {}).get("_target_", ""))
    has_val = "val" in split_names(datamodule)
    names = ["loss", *(name.split("/", 1)[1] for name in model.stage_metrics["train_"].keys(keep_base=False))]
    logged = [f"{split}/{name}" for split in ("train", "val") if split == "train" or has_val for name in names]
    logged += ["step", "epoch"] + (["train/batch_loss"] if plateau else [])
    for key, metric in monitors.items():
        split, _, name = str(metric).partition("/")
        if metric in logged:
            continue
        if split == "val" and not has_val and name in names:
            raise ConfigError(f"{key}={metric} but the data has no val split; monitor train/loss instead")
        reason = (
            "it is not a metric this run logs" if split != "test" else "test metrics are measured once, after training"
        )
        raise ConfigError(f"{key}={metric}: {reason}; pick one of {', '.join(logged)}")


def live_progress(progress: str) -> bool:
    """``progress=auto``: Lightning's progress bar when stdout is a terminal, the plain lines otherwise (CI,
    pipes, logs). A terminal that reports no size (a 0x0 pty: `script`, `docker -t`) gets the lines."""
    if progress == "lines" or (progress == "auto" and not sys.stdout.isatty()):
        return False
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns > 0
    except (OSError, ValueError):  # not a terminal (progress=bar into a pipe): the bar draws at its default width
        return True


def build_loggers(conf: DictConfig | None, run_dir: Path, start_step: int = 0) -> list:
    """The configured loggers from ``start_step``, writing into ``run_dir`` (never where a copied config points)."""
    loggers = []
    for part in (conf or {}).values():
        extra = {"save_dir": str(run_dir)}
        if part._target_.endswith("TensorBoardLogger"):
            # A resume hides what was logged past its checkpoint (all, for a restarted sweep job): one line per curve
            earlier = list((run_dir / part.get("name", "")).glob("**/events.out.tfevents.*"))
            if start_step or earlier:
                extra["purge_step"] = start_step + 1 if start_step else 0
            # TensorBoard reads event files in name order (by start second): a purge works only from a later-named file
            stamps = [int(p.name.split(".")[3]) for p in earlier if p.name.split(".")[3].isdigit()]
            if stamps and 0 < max(stamps) + 1 - time.time() <= 2:  # more: a clock ahead of this one's
                time.sleep(max(stamps) + 1 - time.time())
        elif part._target_.endswith("MLFlowLogger"):
            extra.update(logger_kwargs(part, run_dir))
        loggers.append(build(part, **extra))
    return loggers


def start_logs(loggers: list, settings: dict, run_dir: Path) -> None:
    """What the loggers get when training starts or continues: the run's flat settings, once (not Lightning's nested
    hparams, kept out by the modules), and for MLflow the run opened, tagged and nested under its sweep's."""
    for logger in loggers if rank_zero_only.rank == 0 else ():  # the loggers write from rank 0
        if isinstance(logger, L.pytorch.loggers.MLFlowLogger):
            start_run(logger, settings, run_dir)
        else:
            logger.log_hyperparams(settings)
        logger.save()


def build_callbacks(conf: DictConfig | None, run_dir: Path) -> list:
    """The configured callbacks. ModelCheckpoint saves into ``run_dir``/checkpoints, set here, not by the config: the
    config travels inside checkpoints, and a resumed or evaluated run must not write into its source run's directory."""
    callbacks = []
    for name, part in (conf or {}).items():
        if part.get("dirpath") is not None:
            raise ConfigError(
                f"callbacks.{name}.dirpath={part.dirpath}: checkpoints go into the run directory's"
                " checkpoints/ (resume and evaluate look there); leave dirpath unset"
            )
        callbacks.append(build(part, f"callbacks.{name}"))
        if isinstance(callbacks[-1], L.pytorch.callbacks.ModelCheckpoint):  # as its dirpath argument would set it
            callbacks[-1].dirpath = os.path.realpath(run_dir / "checkpoints")
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list, loggers: list, epochs: int, bar=False, io=None):
    """The trainer with the run's schedule (``epochs``, validation every ``val_every``); profiler reports in run_dir."""
    conf = cfg.trainer
    extra = {"profiler": build(conf.profiler, dirpath=str(run_dir))} if conf.get("profiler") else {}
    trainer = build(
        conf,
        "trainer",
        max_epochs=epochs,
        check_val_every_n_epoch=cfg.val_every,
        log_every_n_steps=cfg.log_every,
        enable_progress_bar=bar,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        plugins=[io or AtomicCheckpointIO()],
        **extra,
    )
    # deterministic=True also NaN-fills new tensors, a quarter of these nets' step time; algorithms stay deterministic
    torch.utils.deterministic.fill_uninitialized_memory = False
    return trainer
