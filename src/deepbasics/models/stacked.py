"""A sweep's jobs of one net class and size trained as one model, one optimizer step for all. Each parameter gets a
leading job axis, ``vmap(functional_call)`` runs each job's rows through its own, and the loss is the sum of the jobs'
mean losses, so each job gets exactly its own gradient; ``StackedOptimizer`` updates each job as torch's SGD, Adam or
AdamW would alone (to float32 rounding: a batched product sums in another order)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from torch import nn
from torch.func import functional_call, stack_module_state

# The optimizers the stacked step applies per job, with its options; flags (True/False) must be equal within a group.
STACKED_OPTIONS = {
    torch.optim.SGD: ("momentum", "dampening", "weight_decay", "nesterov", "maximize"),
    torch.optim.Adam: ("betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"),
    torch.optim.AdamW: ("betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"),
}
HOW_TORCH_COMPUTES = ("foreach", "fused", "capturable")  # ignored: they choose how torch computes the same update


def optimizer_options(spec: dict) -> tuple[type, dict]:
    """(optimizer class, every option: torch's defaults, as an optimizer of it keeps them, and the config's values) of
    a ``_partial_`` config of one of the ``STACKED_OPTIONS``."""
    cls = get_class(spec["_target_"])
    options = cls([torch.zeros(1, requires_grad=True)]).defaults | {k: v for k, v in spec.items() if k[0] != "_"}
    if cls is torch.optim.AdamW:  # AdamW is Adam with decoupled weight decay (an option of its own from torch 2.7)
        options["decoupled_weight_decay"] = True
    return cls, options


def unstackable_optimizer(spec: dict) -> str | None:
    """Why this optimizer cannot train stacked (a class or an option the stacked step does not apply), or None."""
    cls = get_class(spec["_target_"])
    if cls not in STACKED_OPTIONS:
        return f"model.optimizer is {cls.__name__}; stacked jobs train with SGD, Adam or AdamW"
    defaults = optimizer_options({"_target_": spec["_target_"]})[1]
    known = {"lr", *STACKED_OPTIONS[cls], *HOW_TORCH_COMPUTES, "decoupled_weight_decay"}
    unknown = sorted(k for k, v in spec.items() if k[0] != "_" and k not in known and v != defaults.get(k))
    return f"model.optimizer.{unknown[0]} is not applied by the stacked {cls.__name__}" if unknown else None


def optimizer_kind(spec: dict) -> tuple:
    """What jobs must share to step together: the optimizer, its flags, and (SGD) whether it has momentum
    at all (torch skips the momentum buffer for momentum 0, which changes what dampening does)."""
    cls, options = optimizer_options(spec)
    flags = tuple(sorted((k, v) for k, v in options.items() if isinstance(v, bool) and k in STACKED_OPTIONS[cls]))
    return (cls.__name__, flags, bool(options.get("momentum", 0)))


def along_jobs(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-job values (K,) shaped to broadcast over a stacked parameter like ``like``, in its dtype."""
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class StackedNet(nn.Module):
    """K nets of one class and size as one module: parameter ``names[i]`` of job k is ``params[i][k]``."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(list(nets))
        self.names = list(params)
        self.params = nn.ParameterList(nn.Parameter(params[name].detach()) for name in self.names)
        self.stacked_buffers = buffers
        self.__dict__["base"] = copy.deepcopy(nets[0]).to("meta")  # the shape functional_call fills in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, N, in) -> (K, N, out): job k's rows through job k's net."""
        state = (dict(zip(self.names, self.params, strict=True)), self.stacked_buffers)
        return torch.vmap(functional_call, in_dims=(None, 0, 0))(self.base, state, (x,))

    def job_state(self, k: int) -> dict[str, torch.Tensor]:
        """Job k's parameters and buffers as its own net's state_dict (on the CPU)."""
        state = {name: p[k].detach().cpu().clone() for name, p in zip(self.names, self.params, strict=True)}
        return state | {name: b[k].cpu().clone() for name, b in self.stacked_buffers.items()}


class StackedOptimizer(torch.optim.Optimizer):
    """torch's SGD, Adam or AdamW over stacked parameters: job k's slice updated as ``<class>(**its options)`` would."""

    def __init__(self, params: Sequence[nn.Parameter], specs: Sequence[dict]):
        cls, first = optimizer_options(specs[0])
        options = [optimizer_options(spec)[1] for spec in specs]
        self.kind = "sgd" if cls is torch.optim.SGD else "adam"
        device = params[0].device
        precise = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.flags = {k: bool(first[k]) for k in STACKED_OPTIONS[cls] if isinstance(first.get(k), bool)}
        h = self.hyper = {k: torch.tensor([o[k] for o in options], dtype=precise, device=device)
                          for k in STACKED_OPTIONS[cls] if not isinstance(first[k], bool)}  # fmt: skip  # betas: (K, 2)
        self.per_job = {"weight_decay": h["weight_decay"]}  # the update's factors, by name
        if self.kind == "sgd":
            self.per_job.update(momentum=h["momentum"], damped=1 - h["dampening"])
        else:
            beta1, beta2 = h["betas"].T
            self.per_job.update(eps=h["eps"], beta2=beta2, one_minus_beta1=1 - beta1, one_minus_beta2=1 - beta2)
        # Skip what no job uses (the per-step cost of these tiny updates is the number of kernels).
        self.decays = bool(h["weight_decay"].any())
        self.momentum = self.kind == "sgd" and bool(h["momentum"].any())
        self._views: dict[tuple, torch.Tensor] = {}
        self.frozen = torch.zeros(len(specs), dtype=torch.bool, device=device)  # stopped early: rate 0, weights kept
        self.set_lr([o["lr"] for o in options])
        self.steps = 0
        super().__init__(params, {})

    def set_lr(self, values: Sequence[float]) -> None:
        """Each job's learning rate from now on, as its schedule set it: the factors that hold it made again."""
        self.lr = lr = self.hyper["weight_decay"].new_tensor(values).masked_fill(self.frozen, 0)  # as the rest
        self.per_job["neg_lr"] = -lr
        if self.kind == "adam":
            self.per_job["decay"] = 1 - lr * self.hyper["weight_decay"]
        self._views.clear()

    def _view(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """``per_job[name]`` shaped to broadcast over a stacked parameter, in its dtype, made once."""
        key = (name, like.dim(), like.dtype)
        if key not in self._views:
            self._views[key] = along_jobs(self.per_job[name], like)
        return self._views[key]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's automatic optimization: forward and backward happen in here
            with torch.enable_grad():
                loss = closure()
        self.steps += 1
        params = [p for p in self.param_groups[0]["params"] if p.grad is not None]
        if self.kind == "adam":
            # Adam's bias corrections, in float64 as torch computes them from Python floats: once per step
            beta1, beta2 = self.hyper["betas"].T
            self.step_size, self.correction = -self.lr / (1 - beta1**self.steps), torch.sqrt(1 - beta2**self.steps)
        update = self._sgd if self.kind == "sgd" else self._adam
        for p in params:
            grad = -p.grad if self.flags["maximize"] else p.grad
            if self.decays and self.flags.get("decoupled_weight_decay"):
                p.mul_(self._view("decay", p))
            elif self.decays:
                grad = torch.addcmul(grad, p, self._view("weight_decay", p))
            update(p, grad, self.state[p])
        return loss

    def _sgd(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:  # torch's first step: the buffer is the gradient, undamped
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf.mul_(self._view("momentum", p)).addcmul_(grad, self._view("damped", p))
            grad = torch.addcmul(grad, buf, self._view("momentum", p)) if self.flags["nesterov"] else buf
        p.addcmul_(grad, self._view("neg_lr", p))

    def _adam(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            if self.flags["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p)
        state["exp_avg"].lerp_(grad, self._view("one_minus_beta1", p))
        state["exp_avg_sq"].mul_(self._view("beta2", p)).addcmul_(grad, grad * self._view("one_minus_beta2", p))
        second = state["exp_avg_sq"]
        if self.flags["amsgrad"]:
            second = torch.maximum(state["max_exp_avg_sq"], second, out=state["max_exp_avg_sq"])
        denominator = (second.sqrt() / along_jobs(self.correction, p)).add_(self._view("eps", p))
        p.addcdiv_(state["exp_avg"] * along_jobs(self.step_size, p), denominator)

    def load_state_dict(self, state_dict: dict) -> None:
        """Each job's torch optimizer state (``job_state``'s form, in its checkpoint) stacked: a group resumes."""
        jobs = [job["state"] for job in state_dict["jobs"]]
        for i, p in enumerate(self.param_groups[0]["params"]):
            names = [name for name in jobs[0].get(i, {}) if name != "step"]
            self.state[p] = {n: torch.stack([s[i][n] for s in jobs]).to(p.device, p.dtype) for n in names}
        self.steps = next((int(s["step"]) for s in jobs[0].values() if "step" in s), 0)

    def job_state(self, k: int) -> list[dict]:
        """Job k's optimizer state per parameter, as torch's own optimizer for that job keeps it."""
        states = []
        for p in self.param_groups[0]["params"]:
            state = {name: value[k].detach().cpu().clone() for name, value in self.state[p].items()}
            if self.kind == "adam" and state:
                state = {"step": torch.tensor(float(self.steps)), **state}
            if self.kind == "sgd" and not float(self.hyper["momentum"][k]):
                state = {}  # torch keeps no buffer for momentum 0
            states.append(state)
        return states


class StackedModule(L.LightningModule):
    """K jobs as one LightningModule: an epoch is one optimizer step of all jobs on full batches, each job's loss and
    metrics as its module defines them. ``latest``: each metric's last value (as a run's ``callback_metrics``);
    ``failed_at``/``failed_value``: epoch and value of each job's first non-finite loss."""

    def __init__(self, jobs: Sequence[L.LightningModule], log_every: int):
        super().__init__()
        self.jobs = tuple(jobs)  # a tuple: the job modules are not submodules (their nets are copied below)
        self.__dict__["kind"] = jobs[0]  # the loss and metric definitions, kept out of the submodules
        self.net = StackedNet([job.net for job in jobs])
        self.job_metrics = jobs[0].make_metrics()  # one collection, measuring each job in turn
        self.log_every = log_every
        self.latest: dict[str, torch.Tensor] = {}
        self.failed_at = torch.full((len(jobs),), -1, dtype=torch.long)
        self.failed_value = torch.zeros(len(jobs))
        self.on_record = None  # set by the run: called with (step, values) at every point (each job's loggers)
        # each job's own torch optimizer: the form its checkpoints keep, and what its schedule steps
        self.optimizers_alone = [instantiate(job.hparams.optimizer)(job.net.parameters()) for job in jobs]
        self.schedules: JobSchedules | None = None
        self.stopped: dict[int, tuple[int, dict]] = {}  # job -> (step, {"epoch", "reason"}) of its early stop

    def configure_optimizers(self):
        optimizer = StackedOptimizer(list(self.net.params), [job.hparams.optimizer for job in self.jobs])
        if not self.kind.hparams.get("scheduler"):
            return optimizer
        each = [instantiate(self.kind.hparams.scheduler)(alone) for alone in self.optimizers_alone]
        self.schedules = JobSchedules(each, optimizer)
        # as a run of its own configures it (TaskModule): at every epoch's end, a plateau after the epoch's callbacks
        config = {"scheduler": self.schedules, "interval": "epoch", "reduce_on_plateau": self.schedules.plateau}
        config |= {"monitor": "train/batch_loss"} if self.schedules.plateau else {}
        return {"optimizer": optimizer, "lr_scheduler": config}

    def lr_scheduler_step(self, scheduler: JobSchedules, metric) -> None:
        scheduler.step(None if metric is None else self.step_losses)  # a plateau: each job's loss of this step

    def job_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each job's mean loss, (K,): their sum has each job's own gradient in its own parameters."""
        return torch.vmap(self.kind.loss_fn)(out, y)

    def training_step(self, batch, batch_idx):
        losses = self.job_losses(self.net(batch[0]), batch[1])
        total, self.step_losses = losses.sum(), losses.detach()
        if self.schedules and self.schedules.plateau:  # the monitor Lightning checks is there; each job's is stepped
            self.log("train/batch_loss", total.detach(), logger=False)
        if not math.isfinite(total.item()):  # one host sync for all jobs; the jobs never mix, so the others
            new = ~torch.isfinite(losses.detach().cpu()) & (self.failed_at < 0)  # train on as if alone
            self.failed_at[new] = self.current_epoch
            self.failed_value[new] = losses.detach().float().cpu()[new]
        return total

    def on_train_epoch_start(self) -> None:  # each job's rate, as Lightning's LearningRateMonitor logs a run's
        if self.schedules is not None:
            self.on_record(self.global_step, {self.schedules.tag: self.schedules.optimizer.lr})

    def on_train_start(self) -> None:
        if self.current_epoch == 0:  # the curves' first point: the jobs before any step
            self.record("train")

    def record_epoch(self, trainer: L.Trainer, _=None) -> None:
        """The train point of an epoch that logs or validates: called first of the epoch's end hooks, so that the
        console line and the jobs' ModelCheckpoints see it (as a run's WholeTrainSplit)."""
        done = self.current_epoch + 1
        if done % self.log_every == 0 or done % trainer.check_val_every_n_epoch == 0 or done >= trainer.max_epochs:
            self.record("train")

    def validation_step(self, batch, batch_idx) -> None:
        self.record("val")

    def record(self, stage: str) -> None:
        """Every job's metrics on ``stage`` as the jobs are now, kept as the point of this step (a logger's x)."""
        values = self.measure(stage, *self.trainer.datamodule.rows(stage))
        self.latest.update(values)
        self.on_record(self.global_step, values)

    def measure(self, stage: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``stage``'s metrics of every job on its rows x (K, N, features): (K,) each, on the CPU, NaN if failed."""
        with torch.no_grad():
            out = self.net(x)
            values = {f"{stage}/loss": self.job_losses(out, y).float().cpu()}
            for k in self.alive():
                self.job_metrics.update(*self.kind.metric_inputs(out[k], y[k]))
                for name, value in self.job_metrics.compute().items():
                    values.setdefault(f"{stage}/{name}", torch.full((len(self.jobs),), math.nan))[k] = float(value)
                self.job_metrics.reset()
        return dict(sorted(values.items()))

    def probe(self, rows: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> None:
        """A training step's forward and backward on ``device`` with no update: where memory runs out if it will."""
        self.to(device)  # a group that fails here is dropped, gradients and all
        with torch.random.fork_rng([device] if device.type == "cuda" else []):  # a dropout's draws leave no trace
            self.job_losses(self.net(rows[0].to(device)), rows[1].to(device)).sum().backward()
        self.net.zero_grad(set_to_none=True)

    def alive(self) -> list[int]:
        return torch.nonzero(self.failed_at < 0).flatten().tolist()

    def active(self) -> list[int]:
        """The jobs still training, and those that stop in this epoch (their checkpoints and points are still due)."""
        epoch = self.current_epoch + 1
        return [k for k in self.alive() if k not in self.stopped or self.stopped[k][1]["epoch"] == epoch]

    def stop(self, k: int, stopped: dict) -> None:
        """Job k stopped early (its EarlyStopping): its weights stay as they are now, as its run of its own ends."""
        self.stopped[k] = (self.global_step, stopped | {"epoch": self.current_epoch + 1})  # as its run ends
        self.trainer.optimizers[0].frozen[k] = True
        self.trainer.optimizers[0].set_lr(self.trainer.optimizers[0].lr.tolist())


class JobSchedules:
    """Each job's own torch scheduler on its own torch optimizer, stepped where Lightning steps a run's; the learning
    rates they set go to the stacked step. A job's scheduler and optimizer are what its checkpoints keep."""

    def __init__(self, each: Sequence, optimizer: StackedOptimizer):
        self.each, self.optimizer = list(each), optimizer
        self.plateau = isinstance(self.each[0], torch.optim.lr_scheduler.ReduceLROnPlateau)
        self.tag = f"lr-{type(self.each[0].optimizer).__name__}"  # LearningRateMonitor's name for the rate
        optimizer.set_lr([scheduler.optimizer.param_groups[0]["lr"] for scheduler in self.each])  # a warm-up's start

    def step(self, losses: torch.Tensor | None = None) -> None:
        with warnings.catch_warnings():  # the jobs' own optimizers never step (the stacked one does), as torch notes
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            for k, scheduler in enumerate(self.each):
                scheduler.step() if losses is None else scheduler.step(float(losses[k]))
        self.optimizer.set_lr([scheduler.optimizer.param_groups[0]["lr"] for scheduler in self.each])

    def state_dict(self) -> dict:
        return {"jobs": [scheduler.state_dict() for scheduler in self.each]}

    def load_state_dict(self, state: dict) -> None:
        """Each job's scheduler from its checkpoint, and its optimizer's learning rate: the one the scheduler set."""
        for scheduler, own in zip(self.each, state["jobs"], strict=True):
            scheduler.load_state_dict(own)
            scheduler.optimizer.param_groups[0]["lr"] = scheduler.get_last_lr()[0]
        self.optimizer.set_lr([scheduler.get_last_lr()[0] for scheduler in self.each])
