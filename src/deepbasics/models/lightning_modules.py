"""The LightningModules: any ``torch.nn.Module`` net (from its ``_target_`` config) trained in Lightning's loop with
lightning-hydra-template's ``_partial_`` optimizer and scheduler configs; each task names its loss and torchmetrics
once. Configs are plain hyperparameters, so checkpoints load with ``weights_only=True``."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from deepbasics.config.settings import SPLITS
from deepbasics.errors import ConfigError, RunFailed


class TaskModule(L.LightningModule):
    """A net, its optimizer (and schedule), loss and metrics, the last two a task's (subclass's). ``init``: ``default``,
    ``zeros`` or ``{parameter: values}`` (the tutorials' start: ``{linear.weight: [[4.0]], linear.bias: [1.0]}``)."""

    is_classifier = False

    def __init__(self, net: dict, optimizer: dict, scheduler: dict | None = None, init: Any = "default"):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the run's flat settings instead
        self.net = instantiate(net)
        initialise(self.net, init)
        # one metric object per stage, so each reduces over its own epoch (keys apart from nn.Module.train)
        self.stage_metrics = nn.ModuleDict({f"{s}_": self.make_metrics().clone(prefix=f"{s}/") for s in SPLITS})
        self.stage_losses = nn.ModuleDict({f"{s}_": MeanMetric() for s in SPLITS})
        # Set by the run for data not held in memory: train metrics over each epoch's batches (else WholeTrainSplit)
        self.batch_metrics = False
        self.eval_split = "test"  # the stage trainer.test logs under (deepbasics-evaluate split=...)
        self.logs_batch_loss = False  # a plateau schedule watches the loss of every step

    # --- what a task defines: loss_fn(out, y) (a mean over rows), make_metrics() (a MetricCollection), and the
    # metrics' inputs (here the outputs and targets as they are)
    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out, y

    # --- Lightning's hooks
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer)
        config = {"scheduler": scheduler, "interval": "epoch"}  # one step per (tutorial) epoch
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "train/batch_loss"  # the loss of the step just taken (training_step)
            self.logs_batch_loss = True
        return {"optimizer": optimizer, "lr_scheduler": config}

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        out = self(x)
        loss = self.loss_fn(out, y)
        self.check_finite(loss)
        if self.batch_metrics:
            self.update("train", out.detach(), y)
            self.log_stage("train", on_step=False, on_epoch=True)
        if self.logs_batch_loss:  # only then: logging at every step has its cost
            self.log("train/batch_loss", loss.detach(), logger=False)
        # In-memory mini-batches under DDP: weighted by its share, DDP's mean gradient is the batch's (ShuffledPass)
        return loss * batch[2] if len(batch) > 2 else loss

    def validation_step(self, batch, batch_idx) -> None:
        self.update("val", self(batch[0]), batch[1])
        self.log_stage("val")

    def test_step(self, batch, batch_idx) -> None:
        self.update(self.eval_split, self(batch[0]), batch[1])
        self.log_stage(self.eval_split)

    # --- measuring
    def predictions(self, out: torch.Tensor) -> torch.Tensor:
        return predictions(out, self.is_classifier)

    def update(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> None:
        self.stage_metrics[f"{stage}_"].update(*self.metric_inputs(out, y))
        self.stage_losses[f"{stage}_"].update(self.loss_fn(out, y), weight=len(y))

    def log_stage(self, stage: str, **kwargs) -> None:
        """The stage's metric objects (Lightning reduces them over the epoch) and ``step``, every logger's x: the
        optimizer steps taken (Lightning's own x lags one step at validation and epoch-end points)."""
        self.log(f"{stage}/loss", self.stage_losses[f"{stage}_"], **kwargs)
        self.log_dict(self.stage_metrics[f"{stage}_"], **kwargs)
        after = self.global_step + (stage == "train")  # training_step runs before its own optimizer step
        self.log("step", float(after), reduce_fx="max", **kwargs)

    def measure(self, stage: str, batches) -> dict[str, torch.Tensor]:
        """``stage``'s metrics over (x, y) batches, computed once (synced across DDP ranks by torchmetrics)."""
        with torch.no_grad():
            for x, y in batches:
                self.update(stage, self(x), y)
        metrics, loss = self.stage_metrics[f"{stage}_"], self.stage_losses[f"{stage}_"]
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        metrics.reset()
        loss.reset()
        return values

    def check_finite(self, loss: torch.Tensor) -> None:
        """A RunFailed before a NaN/inf step is applied (every DDP rank stops at the same step)."""
        # a host sync, cheap on the CPU; on one device the strategy returns the decision as it is
        bad = self.trainer.strategy.reduce_boolean_decision(not math.isfinite(loss.item()), all=False)
        if bad:
            raise RunFailed(f"the loss became {loss.item()} at epoch {self.current_epoch}", self.current_epoch)


class RegressionModule(TaskModule):
    """MSE loss; MSE, MAE and R² metrics."""

    loss_fn = staticmethod(F.mse_loss)

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})


class BinaryClassifier(TaskModule):
    """BCE on logits (the stable form of sigmoid + BCELoss); accuracy at 0.5 and AUROC on probabilities."""

    is_classifier = True
    loss_fn = staticmethod(F.binary_cross_entropy_with_logits)

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC()})

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(out), y.int()


class MulticlassClassifier(TaskModule):
    """``num_classes`` logits, cross-entropy on them; accuracy and macro F1 on the softmax probabilities."""

    is_classifier = True

    @staticmethod
    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of class logits (N, C) against the data's class column (N, 1) of 0..C-1."""
        return F.cross_entropy(out, y.reshape(-1).long())

    def __init__(self, net: dict, optimizer: dict, num_classes: int = 2, scheduler: dict | None = None, init="default"):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"model.num_classes={num_classes!r} must be an integer of 2 or more")
        if net.get("out_features", num_classes) != num_classes:
            raise ConfigError(f"model.net.out_features={net['out_features']} but model.num_classes={num_classes}")
        self.num_classes = num_classes  # make_metrics, called by the base __init__, needs it
        super().__init__(net, optimizer, scheduler, init)

    def make_metrics(self) -> MetricCollection:
        classes = self.num_classes
        return MetricCollection(
            {"acc": MulticlassAccuracy(classes, average="micro"), "f1": MulticlassF1Score(classes, average="macro")}
        )

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.softmax(out, dim=1), y[:, 0].long()


def predictions(out: torch.Tensor, classifier: bool) -> torch.Tensor:
    """What a user sees: classifiers' probabilities (sigmoid of one logit, softmax of several), regression's values."""
    if not classifier:
        return out
    return torch.softmax(out, dim=1) if out.shape[1] > 1 else torch.sigmoid(out)


@torch.no_grad()
def initialise(net: nn.Module, init: Any) -> None:
    """``model.init``: the net's own init (``default``), ``zeros``, or given values per parameter name."""
    if init in (None, "default"):
        return
    params = dict(net.named_parameters())
    if init == "zeros":
        init = {name: torch.zeros_like(p) for name, p in params.items()}
    if not isinstance(init, dict):
        raise ConfigError(f"model.init={init!r}: use default, zeros, or {{parameter name: values}}")
    for name, values in init.items():
        if name not in params:
            raise ConfigError(f"model.init has '{name}', but the net's parameters are {', '.join(params)}")
        value = torch.as_tensor(values, dtype=params[name].dtype)
        if value.numel() != params[name].numel():
            raise ConfigError(
                f"model.init.{name} has {value.numel()} values, the parameter needs {params[name].numel()}"
                f" (shape {list(params[name].shape)})"
            )
        params[name].copy_(value.reshape(params[name].shape))
