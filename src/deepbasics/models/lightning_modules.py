"""The LightningModules that train the tutorials' nets (``models.nets``) in Lightning's own loop.

``training_step`` computes one batch's loss and returns it; validation and test share one step; metrics are
torchmetrics objects, logged through ``self.log``. Each subclass defines its loss and metrics once: a run
of its own uses them as they are, and ``models.stacked`` takes their stacked forms from the same place.

Logged points sit at ``global_step``, the optimizer steps taken (with full batches: the tutorial's epoch).
A point at x is the model after x steps, which is the cost the tutorials print for epoch x before its
update. The train metrics are those of the whole training split, measured after the step at Lightning's
logging interval (every ``log_every`` tutorial epochs)."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelAUROC,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from deepbasics.config.schema import OPTIMIZER_NAMES, SPLITS, OptimizerSpec
from deepbasics.errors import ConfigError, RunFailed
from deepbasics.models.nets import build_net, predictions, upgrade_state_dict

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES


def build_optimizer(params, spec: dict) -> torch.optim.Optimizer:
    checked = OptimizerSpec.of(spec)
    try:
        return OPTIMIZERS[checked.name](params, lr=checked.lr, **checked.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.optimizer: {err}") from None


def build_scheduler(optimizer: torch.optim.Optimizer, spec: dict):
    """A torch learning-rate scheduler from ``{_target_: torch.optim.lr_scheduler.<Class>, ...}``."""
    from hydra.utils import instantiate

    try:
        return instantiate(spec, optimizer=optimizer)
    except Exception as err:  # Hydra wraps the scheduler's own complaint
        cause = err.__cause__ or err
        raise ConfigError(f"model.scheduler: {str(cause).splitlines()[0]}") from None


class TutorialModule(L.LightningModule):
    """A net, its optimizer (and schedule), its loss and its metrics; subclasses choose loss and metrics."""

    is_classifier = False
    eval_split = "test"  # the stage name trainer.test records under; evaluate may point it at another split
    logs_batch_loss = False  # set by configure_optimizers for a schedule on the train loss

    def __init__(self, net: dict, optimizer: dict, scheduler: dict | None = None):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the flat settings (run.build.start_logs)
        OptimizerSpec.of(optimizer)  # a bad optimizer fails here, before any file of the run is written
        self.net = build_net(net)
        # One metric object per stage (keys avoid clashing with nn.Module.train).
        self.stage_metrics = nn.ModuleDict({f"{s}_metrics": self.make_metrics().clone(prefix=f"{s}/") for s in SPLITS})
        self.stage_losses = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in SPLITS})

    # --- what a subclass defines: the loss (a torch functional loss, mean over rows by default), the
    # metrics of one run or of ``jobs`` stacked runs, and the metrics' inputs, (N, ...) or (K, N, ...)
    @staticmethod
    def loss_fn(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def make_metrics(self, jobs: int = 0) -> MetricCollection:
        raise NotImplementedError

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # --- Lightning's hooks
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.net.parameters(), self.hparams.optimizer)
        spec = self.hparams.get("scheduler")
        if not spec:
            return optimizer
        scheduler = build_scheduler(optimizer, spec)
        # The tutorials' clock: one scheduler step per tutorial epoch, an optimizer step with full batches.
        interval = "step" if self.trainer.datamodule.batch_size is None else "epoch"
        config = {"scheduler": scheduler, "interval": interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "train/batch_loss"  # the loss of the step just taken (training_step)
        self.logs_batch_loss = "monitor" in config
        return {"optimizer": optimizer, "lr_scheduler": config}

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        loss = self.loss_fn(self(x), y)
        self.check_finite(loss)
        if self.logs_batch_loss:  # for a plateau schedule only: logging at every step has its cost
            self.log("train/batch_loss", loss.detach(), logger=False)
        # Under DDP with mini-batches a process holds part of each batch; weighted by its share, DDP's mean
        # of the processes' gradients is the whole batch's (data.in_memory.ShuffledPass).
        return loss * batch[2] if len(batch) > 2 else loss

    def on_train_start(self) -> None:
        # The curve's first point, the model before any step: Lightning logs only after steps, so it goes
        # to the loggers directly.
        if self.global_step == 0:
            self.write(self.measure("train", self.trainer.datamodule.slices("train")))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step, datamodule = self.global_step, self.trainer.datamodule
        if step % self.trainer.log_every_n_steps == 0:  # Lightning's own logging interval
            self.log_split("train")
        elif datamodule.ends_lightning_epoch(step) and datamodule.epochs_done(step) >= datamodule.schedule.epochs:
            # The run's last point, off the interval (epochs=301, log_every=100): Lightning writes the points
            # of a step at its interval only, so this one goes to the loggers directly.
            self.write(self.log_split("train"))

    def validation_step(self, batch, batch_idx) -> None:
        self.evaluate(batch, "val")
        self.log_position(on_step=False, on_epoch=True)

    def test_step(self, batch, batch_idx) -> None:
        self.evaluate(batch, self.eval_split)

    def evaluate(self, batch, stage: str) -> None:
        """Validation and test: one batch into the stage's metrics, logged as torchmetrics objects."""
        x, y = batch
        self.update(stage, self(x), y)
        self.log(f"{stage}/loss", self.stage_losses[f"{stage}_loss"])
        self.log_dict(self.stage_metrics[f"{stage}_metrics"])

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predictions(self(x))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called by Lightning before it loads the weights: parameters saved under earlier names still load.
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"], prefix="net.")

    # --- measuring
    def predictions(self, out: torch.Tensor) -> torch.Tensor:
        return predictions(out, self.is_classifier)

    def update(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> None:
        self.stage_metrics[f"{stage}_metrics"].update(*self.metric_inputs(out, y))
        self.stage_losses[f"{stage}_loss"].update(self.loss_fn(out, y), weight=len(y))

    def measure(self, stage: str, batches) -> dict[str, torch.Tensor]:
        """``stage``'s metrics over (x, y) batches, computed once (synced across DDP ranks by torchmetrics)."""
        with torch.no_grad():
            for x, y in batches:
                self.update(stage, self(x), y)
        metrics, loss = self.stage_metrics[f"{stage}_metrics"], self.stage_losses[f"{stage}_loss"]
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        metrics.reset()
        loss.reset()
        return values

    def log_position(self, **kwargs) -> None:
        """Where training is, beside the points logged now: ``step`` is their x in every logger (Lightning's
        own x is one step behind, for points logged after a step and for validation), ``epoch`` the tutorial
        epochs done, which ModelCheckpoint's ``{epoch}`` in file names reads."""
        self.log("step", float(self.global_step), **kwargs)
        self.log("epoch", float(self.trainer.datamodule.epochs_done(self.global_step)), logger=False, **kwargs)

    def write(self, values: dict[str, torch.Tensor]) -> None:
        """Points straight into the loggers, at this step (for those Lightning's logging does not write)."""
        for logger in self.loggers:
            logger.log_metrics({name: float(value) for name, value in values.items()}, step=self.global_step)

    def log_split(self, stage: str) -> dict[str, torch.Tensor]:
        """The whole split's metrics, as the model is now, logged at this step."""
        values = self.measure(stage, self.trainer.datamodule.slices(stage))
        self.log_dict(values)
        self.log_position()
        return values

    def check_finite(self, loss: torch.Tensor) -> None:
        """A RunFailed before a NaN/inf step is applied (every DDP rank stops at the same step)."""
        bad = not math.isfinite(loss.item())  # a host sync, cheap on the CPU
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            epoch = self.trainer.datamodule.epochs_done(self.global_step)
            raise RunFailed(f"the loss became {loss.item()} at epoch {epoch}", epoch=epoch)

    # --- many jobs at once (models.stacked): outputs and targets with a leading job axis, (K, N, outputs)
    # and (K, N, 1); one value per job, computed together, from the definitions above.
    def job_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each job's mean loss, (K,): the sum of these has each job's own gradient in its own parameters."""
        return self.loss_fn(out, y, reduction="none").reshape(len(out), -1).mean(dim=1)


class RegressionModule(TutorialModule):
    """MSE loss; MSE, MAE and R² metrics."""

    loss_fn = staticmethod(F.mse_loss)

    def make_metrics(self, jobs: int = 0) -> MetricCollection:
        if jobs <= 1:
            return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        # torchmetrics' several-output forms: one output column per job
        return MetricCollection({"mse": MeanSquaredError(num_outputs=jobs), "mae": MeanAbsoluteError(num_outputs=jobs),
                                 "r2": R2Score(multioutput="raw_values")})  # fmt: skip

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if out.dim() == 3:  # (K, N, 1) -> one column per job
            return out[..., 0].T, y[..., 0].T
        return out, y


class BinaryClassifier(TutorialModule):
    """BCE on logits (the stable form of sigmoid + BCELoss); accuracy at 0.5 and AUROC on probabilities."""

    is_classifier = True
    loss_fn = staticmethod(F.binary_cross_entropy_with_logits)

    def make_metrics(self, jobs: int = 0) -> MetricCollection:
        if jobs <= 1:
            return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC()})
        # each job as one label of a multi-label problem: one sort serves every job's AUROC
        return MetricCollection(
            {"acc": MultilabelAccuracy(jobs, average="none"), "auroc": MultilabelAUROC(jobs, average="none")}
        )

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if out.dim() == 3:  # (K, N, 1) -> one column per job
            # A diverged job's NaN would make torchmetrics take every job's probabilities for logits (it
            # checks all of them at once); 0 keeps the others' values as they are.
            return torch.nan_to_num(torch.sigmoid(out[..., 0].T), nan=0.0), y[..., 0].T.int()
        return torch.sigmoid(out), y.int()


def class_cross_entropy(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of class logits (..., C) against the data's class column (..., 1) of 0..C-1."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1).long(), reduction=reduction)


class MulticlassClassifier(TutorialModule):
    """``num_classes`` logits, cross-entropy on them; accuracy and macro F1 on the softmax probabilities."""

    is_classifier = True
    loss_fn = staticmethod(class_cross_entropy)

    def __init__(self, net: dict, optimizer: dict, num_classes: int = 2, scheduler: dict | None = None):
        self.num_classes = num_classes  # make_metrics, called by the base __init__, needs it
        super().__init__(net, optimizer, scheduler)

    def make_metrics(self, jobs: int = 0) -> MetricCollection:
        # stacked: the jobs as torchmetrics' samples, each job's rows as its extra dimension
        each = {"multidim_average": "samplewise"} if jobs else {}
        classes = self.num_classes
        return MetricCollection({"acc": MulticlassAccuracy(classes, average="micro", **each),
                                 "f1": MulticlassF1Score(classes, average="macro", **each)})  # fmt: skip

    def metric_inputs(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if out.dim() == 3:  # (K, N, C) -> (K, C, N) against (K, N)
            return torch.softmax(out, dim=2).transpose(1, 2), y[..., 0].long()
        return torch.softmax(out, dim=1), y[:, 0].long()
