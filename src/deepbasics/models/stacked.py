"""K copies of one small net trained as one model: every parameter stacked on a leading job axis, every
layer one batched matrix product (``torch.baddbmm``), one backward pass and one optimizer step for all K.

The tutorials' nets have 3 to 21 parameters: trained one at a time, a step is all kernel launches and
Python, no arithmetic. Stacked, K jobs cost about what one does until the products get wide. Jobs never
mix: the loss is the sum of the jobs' mean losses, so each job's parameters get exactly their own job's
gradient, and the optimizers below apply each job's own hyperparameters elementwise, as torch's SGD and
Adam would to that job alone (the sums inside a batched product run in another order, so the numbers
agree to float32 rounding, not bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from deepbasics.config.schema import OptimizerSpec
from deepbasics.models.lightning_modules import TutorialModule

# Options the stacked optimizers apply per job; a flag (True/False) must be the same for every job of a group.
STACKED_OPTIONS = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False, "maximize": False},
    "adam": {
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": False,
        "maximize": False,
        "decoupled_weight_decay": False,
    },
}


def unstackable_optimizer(spec: dict) -> str | None:
    """Why this optimizer cannot train stacked (an option the stacked step does not apply), or None."""
    checked = OptimizerSpec.of(spec)
    unknown = sorted(set(checked.options) - set(STACKED_OPTIONS[checked.name]))
    if unknown:
        return f"model.optimizer.{unknown[0]} is not applied by the stacked {checked.name}"
    return None


def optimizer_kind(spec: dict) -> tuple:
    """What jobs must share to step together: the optimizer, its flags, and (SGD) whether it has momentum
    at all (torch skips the momentum buffer for momentum 0, which changes what dampening does)."""
    checked = OptimizerSpec.of(spec)
    options = {**STACKED_OPTIONS[checked.name], **checked.options}
    flags = tuple(sorted((k, v) for k, v in options.items() if isinstance(v, bool)))
    return (checked.name, flags, bool(options.get("momentum", 0)))


class StackedNet(nn.Module):
    """K nets of one class and size as one module: parameter ``name`` of job k is ``params[i][k]``."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        first = nets[0]
        self.names = [name for name, _ in first.named_parameters()]
        per_net = [dict(net.named_parameters()) for net in nets]
        self.params = nn.ParameterList(
            nn.Parameter(torch.stack([p[name].detach() for p in per_net])) for name in self.names
        )
        index = {name: i for i, name in enumerate(self.names)}
        self._plan: list[tuple[int, int] | None] = []
        for layer in type(first).LAYERS:
            module = getattr(first, layer)
            if isinstance(module, nn.Linear):
                self._plan.append((index[f"{layer}.weight"], index[f"{layer}.bias"]))
            elif isinstance(module, nn.ReLU):
                self._plan.append(None)
            else:
                raise TypeError(f"{type(first).__name__}.{layer}: {type(module).__name__} has no stacked form")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, N, in) -> (K, N, out): job k's rows through job k's net."""
        for layer in self._plan:
            if layer is None:
                x = torch.relu(x)
            else:
                weight, bias = self.params[layer[0]], self.params[layer[1]]
                x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        return x

    def job_state(self, k: int) -> dict[str, torch.Tensor]:
        """Job k's parameters as its own net's state_dict (on the CPU)."""
        return {name: p[k].detach().cpu().clone() for name, p in zip(self.names, self.params, strict=True)}


class StackedOptimizer(torch.optim.Optimizer):
    """torch's SGD or Adam over stacked parameters, with each job's own hyperparameters: the update of job
    k's slice is the one ``torch.optim.<SGD|Adam>(lr=..., **options)`` makes for job k alone."""

    def __init__(self, params: Sequence[nn.Parameter], specs: Sequence[dict]):
        checked = [OptimizerSpec.of(spec) for spec in specs]
        self.kind = checked[0].name
        defaults = STACKED_OPTIONS[self.kind]
        options = [{**defaults, **c.options} for c in checked]
        device = params[0].device
        precise = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.flags = {k: options[0][k] for k, v in defaults.items() if isinstance(v, bool)}

        def per_job(values) -> torch.Tensor:
            return torch.tensor(values, dtype=precise, device=device)

        self.lr = per_job([c.lr for c in checked])
        self.hyper = {
            k: per_job([o[k] for o in options]) for k, v in defaults.items() if not isinstance(v, bool)
        }  # betas -> (K, 2)
        h = self.hyper
        self.per_job = {"neg_lr": -self.lr}  # the fixed per-job factors of the update, by name
        if self.kind == "sgd":
            self.per_job.update(weight_decay=h["weight_decay"], momentum=h["momentum"], damped=1 - h["dampening"])
        else:
            beta1, beta2 = h["betas"][:, 0], h["betas"][:, 1]
            self.per_job.update(weight_decay=h["weight_decay"], eps=h["eps"], beta2=beta2, one_minus_beta1=1 - beta1,
                                one_minus_beta2=1 - beta2, decay=1 - self.lr * h["weight_decay"])  # fmt: skip
        # Skip what no job uses (the per-step cost of these tiny updates is the number of kernels).
        self.decays = bool(h["weight_decay"].any())
        self.momentum = self.kind == "sgd" and bool(h["momentum"].any())
        self._views: dict[tuple, torch.Tensor] = {}
        self.steps = 0
        super().__init__(params, {})

    def _view(self, name: str, like: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """Per-job values (``per_job[name]``, or ``values``) shaped to broadcast over a stacked parameter,
        in its dtype; the fixed ones are made once."""
        if values is not None:
            return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))
        key = (name, like.dim(), like.dtype)
        if key not in self._views:
            self._views[key] = self.per_job[name].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))
        return self._views[key]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's automatic optimization: forward and backward happen in here
            with torch.enable_grad():
                loss = closure()
        self.steps += 1
        params = [p for p in self.param_groups[0]["params"] if p.grad is not None]
        if self.kind == "sgd":
            for p in params:
                self._sgd(p, self.state[p])
            return loss
        # Adam's bias corrections, in float64 as torch computes them from Python floats: once per step
        beta1, beta2 = self.hyper["betas"][:, 0], self.hyper["betas"][:, 1]
        step_size, correction = -self.lr / (1 - beta1**self.steps), torch.sqrt(1 - beta2**self.steps)
        for p in params:
            self._adam(p, self.state[p], step_size, correction)
        return loss

    def _sgd(self, p: torch.Tensor, state: dict) -> None:
        grad = -p.grad if self.flags["maximize"] else p.grad
        if self.decays:
            grad = torch.addcmul(grad, p, self._view("weight_decay", p))
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:  # torch's first step: the buffer is the gradient, undamped
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf.mul_(self._view("momentum", p)).addcmul_(grad, self._view("damped", p))
            grad = torch.addcmul(grad, buf, self._view("momentum", p)) if self.flags["nesterov"] else buf
        p.addcmul_(grad, self._view("neg_lr", p))

    def _adam(self, p: torch.Tensor, state: dict, step_size: torch.Tensor, correction: torch.Tensor) -> None:
        grad = -p.grad if self.flags["maximize"] else p.grad
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            if self.flags["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p)
        if self.flags["decoupled_weight_decay"]:
            if self.decays:
                p.mul_(self._view("decay", p))
        elif self.decays:
            grad = torch.addcmul(grad, p, self._view("weight_decay", p))
        state["exp_avg"].lerp_(grad, self._view("one_minus_beta1", p))
        state["exp_avg_sq"].mul_(self._view("beta2", p)).addcmul_(grad, grad * self._view("one_minus_beta2", p))
        second = state["exp_avg_sq"]
        if self.flags["amsgrad"]:
            second = torch.maximum(state["max_exp_avg_sq"], second, out=state["max_exp_avg_sq"])
        denominator = (second.sqrt() / self._view("", p, correction)).add_(self._view("eps", p))
        p.addcdiv_(state["exp_avg"] * self._view("", p, step_size), denominator)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["steps"] = self.steps  # Adam's bias corrections count the steps taken
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.steps = int(state_dict.get("steps", 0))

    def stacked_state(self, job_states: Sequence[list[dict]]) -> dict:
        """This optimizer's state_dict holding each job's state (per parameter, in the form torch's optimizer
        for that job keeps it: ``job_state``'s), so a group continues from its jobs' checkpoints."""
        params = self.param_groups[0]["params"]
        state = {}
        for i, p in enumerate(params):
            names = [name for name in job_states[0][i] if name != "step"]
            if names:
                state[i] = {n: torch.stack([s[i][n] for s in job_states]).to(p.device, p.dtype) for n in names}
        steps = next((int(s["step"]) for s in job_states[0] if "step" in s), 0)
        return {"state": state, "param_groups": super().state_dict()["param_groups"], "steps": steps}

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
    """A group of jobs as one LightningModule in Lightning's own loop: a step is one optimizer step of all K
    jobs on their full batches, with each job's loss and metrics as its module defines them
    (``TutorialModule.job_losses``, ``make_metrics(jobs)``). ``history`` keeps every logged point as
    (step, {"<stage>/<metric>": (K,) values}) and ``latest`` the points of the current step;
    ``failed_at``/``failed_value``: the epoch whose loss first went non-finite, per job (-1: never)."""

    def __init__(self, jobs: Sequence[TutorialModule]):
        super().__init__()
        self.jobs = tuple(jobs)  # a tuple: the job modules are not submodules (their nets are copied below)
        # the loss and metric definitions of every job, kept out of the submodules (never moved or cast)
        self.__dict__["kind"] = jobs[0]
        self.net = StackedNet([job.net for job in jobs])
        self.job_metrics = jobs[0].make_metrics(len(jobs))
        self.history: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.latest: dict[str, torch.Tensor] = {}
        self.failed_at = torch.full((len(jobs),), -1, dtype=torch.long)
        self.failed_value = torch.zeros(len(jobs))
        self.on_record = None  # called with (step, values) at every recorded point (each job's loggers)

    def configure_optimizers(self):
        return StackedOptimizer(list(self.net.params), [job.hparams.optimizer for job in self.jobs])

    def training_step(self, batch, batch_idx):
        x, y = batch
        losses = self.kind.job_losses(self.net(x), y)
        total = losses.sum()
        if not math.isfinite(total.item()):  # one host sync for all jobs; the jobs never mix, so the others
            self._mark_failed(~torch.isfinite(losses), losses)  # train on as if alone
        return total

    def on_train_start(self) -> None:
        if self.global_step == 0:  # the curves' first point: the jobs before any step
            self.record("train")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step, datamodule = self.global_step, self.trainer.datamodule
        if step % self.trainer.log_every_n_steps == 0 or (
            datamodule.ends_lightning_epoch(step) and step >= datamodule.schedule.epochs
        ):
            self.record("train")

    def validation_step(self, batch, batch_idx) -> None:
        self.record("val")

    def record(self, stage: str) -> dict[str, torch.Tensor]:
        """Every job's metrics on ``stage`` as the jobs are now, kept as the point of this step."""
        values = self.measure(stage, *self.trainer.datamodule.rows(stage))
        if not self.latest or self.history[-1][0] != self.global_step:
            self.latest = {}
        self.latest.update(values)
        self.history.append((self.global_step, values))
        if self.on_record is not None:
            self.on_record(self.global_step, values)
        return values

    def measure(self, stage: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``stage``'s metrics of every job on its rows ``x`` (K, N, features), (K,) each, on the CPU."""
        with torch.no_grad():
            return self.metrics_of(stage, self.net(x), y)

    def metrics_of(self, stage: str, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``stage``'s metrics of every job from its outputs (K, N, outputs) and targets (K, N, 1)."""
        jobs = len(self.jobs)
        with torch.no_grad():
            self.job_metrics.update(*self.kind.metric_inputs(out, y))
            values = {f"{stage}/{k}": v.reshape(jobs) for k, v in self.job_metrics.compute().items()}
            self.job_metrics.reset()
            values[f"{stage}/loss"] = self.kind.job_losses(out, y)
        return {k: v.detach().float().cpu() for k, v in sorted(values.items())}

    def _mark_failed(self, bad: torch.Tensor, losses: torch.Tensor) -> None:
        new = bad.cpu() & (self.failed_at < 0)
        self.failed_at[new] = self.global_step
        self.failed_value[new] = losses.detach().float().cpu()[new]

    def alive(self) -> list[int]:
        return [k for k in range(len(self.jobs)) if self.failed_at[k] < 0]
