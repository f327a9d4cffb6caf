"""LightningModules that train any net of ``deepbasics.models.nets`` the way the tutorials do: one full-batch
gradient step per tutorial "epoch".

Lightning's per-batch machinery costs more than a whole step of these tiny nets, so one Lightning epoch
runs the full-batch steps up to the next validation (``val_every``) in a plain PyTorch loop, and
``global_step`` counts those steps: checkpoints, TensorBoard x-axes and resume all speak in the
tutorial's epochs. Every logged point is the state after x steps (the tutorials print the cost of
epoch x before its update, which is the same number).
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torchmetrics.functional as tmf
import torchmetrics.functional.classification as tmc
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, MulticlassAccuracy, MulticlassF1Score
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


class FullBatchModule(L.LightningModule):
    """Shared loop and bookkeeping; subclasses choose the loss, the metrics and whether outputs are logits."""

    is_classifier = False
    eval_split = "test"  # the stage name trainer.test records under; evaluate may point it at another split

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        epochs: int = 1,
        log_every: int = 1,
        val_every: int = 1,
        scheduler: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        OptimizerSpec.of(optimizer)  # a bad optimizer fails here, before any file of the run is written
        self.net = build_net(net)
        self.loss_fn = self.make_loss()
        self.automatic_optimization = False
        # One metric object per stage (keys avoid clashing with nn.Module.train).
        self.stage_metrics = nn.ModuleDict({f"{s}_metrics": self.make_metrics().clone(prefix=f"{s}/") for s in SPLITS})
        self.stage_losses = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in SPLITS})

    def make_loss(self) -> nn.Module:
        raise NotImplementedError

    def make_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def predictions(self, out: torch.Tensor) -> torch.Tensor:
        return predictions(out, self.is_classifier)

    def metric_targets(self, y: torch.Tensor) -> torch.Tensor:
        """The targets as torchmetrics takes them (the data keep every target as an (N, 1) float column)."""
        return y.int() if self.is_classifier else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.net.parameters(), self.hparams.optimizer)
        spec = self.hparams.get("scheduler")
        if not spec:
            return optimizer
        # Handed to Lightning so checkpoints carry its state; the loop below steps it once per epoch.
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, spec)}

    def on_train_start(self) -> None:
        # Under DDP the loop below runs many backward passes per wrapped forward; DDP's own reducer would sync
        # only the first, so it stands aside and the loop averages the gradients of every step itself
        # (through Lightning's strategy.reduce). With equal shards that average is the full-batch gradient.
        if self.trainer.world_size > 1:
            self.trainer.strategy.model.require_backward_grad_sync = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        hp = self.hparams
        # The raw optimizer: Lightning's wrapper roughly doubles the cost of a step this small.
        opt = self.optimizers().optimizer
        scheduler = self.lr_schedulers()
        on_plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        start = self.global_step
        stop = min((start // hp.val_every + 1) * hp.val_every, hp.epochs)
        net, loss_fn, log_every, trainer = self.net, self.loss_fn, hp.log_every, self.trainer  # hoisted lookups
        distributed = trainer.world_size > 1
        data, minibatch = trainer.datamodule, self._batch_size()
        if start == 0:
            self.record_batches("train", *self.train_rows(x, y), step=0)
        done = start
        for step in range(start, stop):
            if minibatch:  # an epoch is a pass over the data in shuffled slices
                if step != start and step % log_every == 0:
                    self.record_batches("train", *self.train_rows(x, y), step=step, callbacks=False)
                for xb, yb, rows in data.shuffled_batches(x, y, step):
                    value = self._gradient_step(
                        opt, xb, yb, step, distributed, share=len(yb) * trainer.world_size / rows
                    )
            else:  # the tutorials' epoch: one full-batch step, whose outputs also give the logged point
                out = net(x)
                loss = loss_fn(out, y)
                value = self._checked(loss, step, distributed)
                if step != start and step % log_every == 0:
                    self.record("train", out.detach(), y, step=step, callbacks=False)
                opt.zero_grad()
                loss.backward()
                if distributed:
                    self._average_gradients()
                opt.step()
            if scheduler is not None:  # the epoch clock: one scheduler step per epoch
                scheduler.step(value) if on_plateau else scheduler.step()
            done = step + 1
            # Ctrl-C / SIGTERM (deepbasics.run.callbacks.GracefulStop): stop at a whole step, all ranks at the same one
            stopping = trainer.should_stop
            if distributed:
                stopping = self._all_mean(torch.tensor(float(stopping))).item() > 0
            if stopping:
                trainer.should_stop = True
                break
        self._count_steps(done - start)
        if done % log_every == 0 or done == hp.epochs:  # not at an interrupted step: the curve keeps its grid
            self.record_batches("train", *self.train_rows(x, y), step=done)

    def train_rows(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training rows this rank measures: under DDP with mini-batches every rank holds all rows (it
        takes its part of each batch), so it measures every world_size-th one, as in full-batch DDP."""
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1 and self._batch_size():
            return x[trainer.global_rank :: trainer.world_size], y[trainer.global_rank :: trainer.world_size]
        return x, y

    def _checked(self, loss: torch.Tensor, step: int, distributed: bool) -> float:
        """The loss as a number (a host sync, cheap on CPU); a RunFailed before a NaN/inf step is applied."""
        value = self._all_mean(loss.detach()).item() if distributed else loss.item()
        if not math.isfinite(value):
            raise RunFailed(f"the loss became {value} at epoch {step}", epoch=step)
        return value

    def _gradient_step(self, opt, x, y, step: int, distributed: bool, share: float) -> float:
        """One optimizer step on a mini-batch. Under DDP each rank holds part of the batch: its mean loss,
        weighted by its share (rows here x world size / rows in the batch), averaged over the ranks, is the
        batch's mean loss, so uneven last batches still give the one-process gradient."""
        loss = self.loss_fn(self.net(x), y)
        value = self._checked(loss, step, distributed)
        opt.zero_grad()
        (loss * share if distributed else loss).backward()
        if distributed:
            self._average_gradients()
        opt.step()
        return value

    def _all_mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(value.to(self.device), reduce_op="mean")

    def _average_gradients(self) -> None:
        grads = [p.grad for p in self.net.parameters()]
        mean = self._all_mean(torch.cat([g.flatten() for g in grads]))  # one collective for all parameters
        offset = 0
        for g in grads:
            g.copy_(mean[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def validation_step(self, batch, batch_idx):
        step = self.global_step
        if step % self.hparams.val_every == 0 or step >= self.hparams.epochs:  # not at an interrupted step
            self.record_batches("val", *batch)

    def test_step(self, batch, batch_idx):
        self.record_batches(self.eval_split, *batch)

    def _batch_size(self) -> int | None:
        """data.batch_size of the attached DataModule: None (the tutorials' full batch) or rows per step."""
        trainer = self._trainer
        return getattr(trainer.datamodule, "batch_size", None) if trainer is not None else None

    def record_batches(self, stage: str, x: torch.Tensor, y: torch.Tensor, step: int | None = None, callbacks=True):
        """``record`` of a whole split, evaluated in slices (``outputs``) when the data come in mini-batches."""
        values = self.measure_batches(stage, self.outputs(x, y, self._batch_size()))
        return self._publish(stage, values, step, callbacks)

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predictions(self.net(x))

    def measure(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``stage``'s metrics of one full batch of outputs (synced across DDP ranks by torchmetrics)."""
        return self.measure_batches(stage, [(out, y)])

    def measure_batches(self, stage: str, batches) -> dict[str, torch.Tensor]:
        """``stage``'s metrics over (outputs, targets) batches, accumulated, then computed once."""
        metrics, loss = self.stage_metrics[f"{stage}_metrics"], self.stage_losses[f"{stage}_loss"]
        for out, y in batches:
            metrics.update(self.predictions(out), self.metric_targets(y))
            loss.update(self.loss_fn(out, y), weight=len(y))
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        metrics.reset()
        loss.reset()
        return values

    def outputs(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None):
        """(outputs, targets) of x in slices of ``batch_size`` rows (all at once for None), without grad."""
        # Measuring needs no small batches: slices of at least 65536 rows keep memory bounded while keeping
        # the per-slice cost of torchmetrics' updates off large splits.
        size = max(batch_size, 65_536) if batch_size else len(x)
        with torch.no_grad():
            for start in range(0, len(x), size):
                yield self.net(x[start : start + size]), y[start : start + size]

    def record(
        self, stage: str, out: torch.Tensor, y: torch.Tensor, step: int | None = None, callbacks: bool = True
    ) -> dict[str, torch.Tensor]:
        """``measure``, logged at x = ``step`` (default: full-batch steps taken so far); ``callbacks`` also
        hands them to Lightning (checkpoint monitor, early stopping, results), which costs more."""
        return self._publish(stage, self.measure(stage, out, y), step, callbacks)

    def _publish(self, stage: str, values: dict, step: int | None, callbacks: bool) -> dict[str, torch.Tensor]:
        # Lightning's own logging would put the x-axis at its epochs; the loggers get tutorial epochs instead,
        # and self.log feeds callbacks (checkpoint monitor) and the results.
        if callbacks:
            self.log_dict(values, logger=False)
        scalars = {k: float(v) for k, v in values.items()}
        step = self.global_step if step is None else step
        for logger in self.loggers:
            logger.log_metrics(scalars, step=step)
        bar = self._trainer.progress_bar_callback if self._trainer is not None else None
        if stage == "train" and hasattr(bar, "show_epoch"):  # a live bar on a terminal (run.callbacks)
            bar.show_epoch(step, scalars)
        return values

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called by Lightning before it loads the weights: parameters saved under earlier names still load.
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"], prefix="net.")

    def _count_steps(self, n: int) -> None:
        count_steps(self.trainer, n)

    # Many jobs at once (models.stacked): outputs and targets with a leading job axis, (K, N, outputs) and
    # (K, N, 1); one value per job, computed together.
    def job_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each job's mean loss, (K,): the sum of these has each job's own gradient in its own parameters."""
        raise NotImplementedError

    def job_metrics(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``measure`` for K jobs at once: {"<stage>/<name>": (K,) values}, the same names and numbers."""
        raise NotImplementedError


def count_steps(trainer: L.Trainer, n: int) -> None:
    """Advance ``global_step`` by ``n``: it counts optimizer steps taken through Lightning's wrapper, which
    the loops here skip."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.total.increment_by(n)
    progress.current.increment_by(n)


class RegressionModule(FullBatchModule):
    """MSE loss; MSE, MAE and R² metrics."""

    def make_loss(self) -> nn.Module:
        return nn.MSELoss()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})

    def job_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out, y, reduction="none").mean(dim=(1, 2))

    def job_metrics(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        # torchmetrics' several-output form: one output column per job (one job: its plain form)
        jobs = len(out)
        predicted, target = (out[..., 0].T, y[..., 0].T) if jobs > 1 else (out[0, :, 0], y[0, :, 0])
        return {
            f"{stage}/loss": self.job_losses(out, y),
            f"{stage}/mae": tmf.mean_absolute_error(predicted, target, num_outputs=jobs).reshape(jobs),
            f"{stage}/mse": tmf.mean_squared_error(predicted, target, num_outputs=jobs).reshape(jobs),
            f"{stage}/r2": tmf.r2_score(predicted, target, multioutput="raw_values").reshape(jobs),
        }


class BinaryClassifier(FullBatchModule):
    """BCE on logits (the stable form of sigmoid + BCELoss); accuracy at 0.5 and AUROC on probabilities."""

    is_classifier = True

    def make_loss(self) -> nn.Module:
        return nn.BCEWithLogitsLoss()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC()})

    def job_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none").mean(dim=(1, 2))

    def job_metrics(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        probabilities, labels = torch.sigmoid(out[..., 0]), y[..., 0].int()
        if len(out) > 1:  # each job's AUROC as one label of a multi-label problem: one sort for all jobs
            auroc = tmc.multilabel_auroc(probabilities.T, labels.T, num_labels=len(out), average="none")
        else:
            auroc = tmc.binary_auroc(probabilities[0], labels[0]).reshape(1)
        return {
            # thresholded here: on floats torchmetrics checks all K jobs' values at once, and one job's NaN
            # would make it re-apply the sigmoid to every job's
            f"{stage}/acc": tmc.binary_accuracy(
                (probabilities > 0.5).long(), labels, multidim_average="samplewise"
            ).reshape(len(out)),
            f"{stage}/auroc": auroc,
            f"{stage}/loss": self.job_losses(out, y),
        }


class ClassColumnCrossEntropy(nn.Module):
    """Cross-entropy of class logits (N, C) against the data's class column (N, 1) of 0..C-1."""

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y[:, 0].long())


class MulticlassClassifier(FullBatchModule):
    """``num_classes`` logits, cross-entropy on them; accuracy and macro F1 on the softmax probabilities."""

    is_classifier = True

    def __init__(self, net: dict, optimizer: dict, num_classes: int = 2, **kwargs):
        self.num_classes = num_classes  # make_metrics, called by the base __init__, needs it
        super().__init__(net, optimizer, **kwargs)

    def make_loss(self) -> nn.Module:
        return ClassColumnCrossEntropy()

    def make_metrics(self) -> MetricCollection:
        classes = self.num_classes
        return MetricCollection(
            {"acc": MulticlassAccuracy(classes, average="micro"), "f1": MulticlassF1Score(classes, average="macro")}
        )

    def metric_targets(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, 0].long()

    def job_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        jobs, rows, classes = out.shape
        each = nn.functional.cross_entropy(out.reshape(-1, classes), y.reshape(-1).long(), reduction="none")
        return each.reshape(jobs, rows).mean(dim=1)

    def job_metrics(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        # the jobs as torchmetrics' samples, each job's rows as its extra dimension: (K, C, N) against (K, N)
        probabilities, labels, classes = torch.softmax(out, dim=2).transpose(1, 2), y[..., 0].long(), self.num_classes
        each = {"multidim_average": "samplewise", "num_classes": classes}
        return {
            f"{stage}/acc": tmc.multiclass_accuracy(probabilities, labels, average="micro", **each).reshape(len(out)),
            f"{stage}/f1": tmc.multiclass_f1_score(probabilities, labels, average="macro", **each).reshape(len(out)),
            f"{stage}/loss": self.job_losses(out, y),
        }
