"""Jobs of a sweep trained together as one stacked model (``models.stacked``; the launcher is
``hydra_plugins/deepbasics_vectorized``), in Lightning's own loop on the schedule a run of its own has.
Every job ends with what a run of its own leaves in its directory: checkpoints that a run of its own resumes
(its own ModelCheckpoint, built from its config, decides when and what to save, and ``JobCheckpointIO``
writes that job's part of the group's checkpoint), logger events, model.pt, figures and metrics.json; and
it returns its monitored value, or the error that ended it. A job whose loss goes non-finite fails alone;
the others train on."""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from deepbasics.compat import lightning_epochs_done
from deepbasics.config.run_dir import LAST
from deepbasics.config.schema import OPTIMUM_LOSS, Schedule, validate_train_config
from deepbasics.config.sweep_dir import STATE
from deepbasics.data.in_memory import StackedSplits
from deepbasics.errors import ConfigError, RunFailed, one_line
from deepbasics.files import FileSet, lock_run_dir, remove_dead_writes, unlock_run_dir
from deepbasics.models.lightning_modules import build_optimizer
from deepbasics.models.optimum import MAX_ROWS, log_optimum_line, optimum
from deepbasics.models.stacked import StackedModule
from deepbasics.reports.figures import Layouts
from deepbasics.run.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_model,
    is_model_checkpoint,
    lightning_trainer,
    start_logs,
)
from deepbasics.run.callbacks import ConsoleLog, LastCheckpoint, RunState, SignalStop
from deepbasics.run.checkpoints import AtomicCheckpointIO, read_checkpoint
from deepbasics.run.finish import keeps_curves, write_end
from deepbasics.run.rng import rng_states
from deepbasics.run.training import diverged, interruption, record_status

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One job of a group: its config (resolved), directory, and once built its module, data and own
    checkpoint callback; ``outcome`` is its monitored value or the error that ended it."""

    cfg: DictConfig
    label: str
    run_dir: Path = field(init=False)
    module: L.LightningModule | None = None
    datamodule: L.LightningDataModule | None = None
    checkpoint: L.pytorch.callbacks.ModelCheckpoint | None = None
    run_state: RunState | None = None
    rng: dict | None = None
    optimizer: torch.optim.Optimizer | None = None
    resumed: dict | None = None  # the checkpoint it continues from (a resumed sweep's), read once
    loggers: list = field(default_factory=list)  # written while the group trains
    outcome: float | BaseException | None = None

    def __post_init__(self) -> None:
        self.run_dir = Path(self.cfg.paths.run_dir)

    def fail(self, err: BaseException, status: str = "failed", **extra) -> None:
        self.outcome = err
        record_status(self.run_dir, self.cfg, status, one_line(err) if status == "failed" else str(err), **extra)


def train_group(
    cfgs: Sequence[DictConfig], labels: Sequence[str], timings: dict | None = None
) -> list[float | BaseException]:
    """Train these jobs' configs (same net shape, optimizer kind and schedule: the launcher groups them) as
    stacked models; one outcome per job, in order. ``timings["fit"]`` gets the seconds spent in fit."""
    jobs = [Job(cfg, label) for cfg, label in zip(cfgs, labels, strict=True)]
    _allow_open_files(len(jobs))
    held = []
    try:
        for job in jobs:  # first: a job whose directory another process holds writes nothing into it
            try:
                lock_run_dir(job.run_dir)
                held.append(job.run_dir)
                remove_dead_writes(job.run_dir)  # a checkpoint a kill cut short
            except (ConfigError, OSError) as err:  # held by another process, or out of file descriptors
                job.outcome = err
        shared: dict[str, L.LightningDataModule] = {}
        built = [job for job in jobs if job.outcome is None and _build(job, shared)]
        shapes: dict[tuple, list[Job]] = {}
        for job in built:  # the data may differ per job, their shapes may not
            shape = tuple((name, tuple(x.shape)) for name, (x, _) in job.datamodule.splits.items())
            shapes.setdefault(shape, []).append(job)
        if len(shapes) > 1:
            for members in list(shapes.values())[1:]:
                numbers = ", #".join(job.label for job in members)
                log.info(f"#{numbers}: other data shapes (rows per split) than the first jobs': a group of their own")
        for members in shapes.values():
            try:
                _train_stacked(members, timings if timings is not None else {})
            except DeviceTooSmall:
                raise  # the whole launch is refused, in one line
            except Exception as err:  # what would have failed each job alone fails each job of the group
                for job in members:
                    if job.outcome is None:
                        job.fail(err)
    finally:
        for run_dir in held:
            unlock_run_dir(run_dir)
    return [job.outcome for job in jobs]


def _allow_open_files(jobs: int) -> None:
    """Every job holds its directory's lock file open while the group trains: raise the soft limit on open
    files toward the hard one when a large group needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = jobs + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _build(job: Job, shared: dict) -> bool:
    """The job's data, module (initialised exactly as a run of its own: same seed, same order of random
    draws) and checkpoint callback; False when that fails (the job fails alone, recorded, as it would
    under the basic launcher)."""
    cfg = job.cfg
    try:
        validate_train_config(cfg)
        schedule = Schedule.of(cfg)
        L.seed_everything(cfg.seed, verbose=False)
        key = json.dumps([OmegaConf.to_container(cfg.data, resolve=True), cfg.get("overfit_rows")], sort_keys=True)
        if key not in shared:  # data builders draw from their own seeded generators: sharing changes nothing
            shared[key] = build_datamodule(cfg, schedule=schedule)
        job.datamodule = shared[key]
        job.module = build_model(cfg, job.datamodule)
        job.rng = rng_states()  # what a run of its own would store: nothing random happens after the init
        if cfg.get("resume"):  # a job of a resumed sweep: its own last checkpoint (config.sweep_dir)
            job.resumed = read_checkpoint(Path(cfg.resume) / LAST, key="resume")
            job.rng = job.resumed["callbacks"][RunState.__qualname__]["rng"]
        # torch checks the optimizer's values (the stacked step does not): a bad one fails its own job here
        job.optimizer = build_optimizer(job.module.net.parameters(), job.module.hparams.optimizer)
        callbacks = build_callbacks(cfg, job.run_dir)
        job.checkpoint = next((c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None)
        job.run_state = RunState(OmegaConf.to_container(cfg, resolve=True))
    except Exception as err:
        job.fail(err)
        return False
    return True


def _train_stacked(jobs: list[Job], timings: dict) -> None:
    first = jobs[0].cfg
    schedule = Schedule.of(first)
    torch.set_num_threads(first.threads)
    group = StackedModule([job.module for job in jobs])
    data = StackedSplits([job.datamodule for job in jobs], schedule)
    checkpoints = JobCheckpoints(jobs, group)
    labels = [job.label for job in jobs]
    console = ConsoleLog(first.monitor.metric, first.monitor.mode, labels)
    callbacks = [console, checkpoints, LastCheckpoint(checkpoints.last_checkpoints)]
    root = jobs[0].run_dir.parent
    resumed = jobs[0].resumed  # the launcher groups the jobs of a resumed group, all at the same step
    start = (lightning_epochs_done(resumed), resumed["global_step"]) if resumed else (0, 0)
    journal = root / STATE / f"journal-{jobs[0].label}.json"  # config.sweep_dir' folder in the sweep directory
    trainer = lightning_trainer(first, schedule, root, callbacks, [], data, resumed=start,
                                checkpoint_io=JobCheckpointIO(checkpoints, journal))  # fmt: skip
    _check_device_memory(trainer, group, data)
    _start_logs(jobs, group, start[1])
    began = time.perf_counter()
    try:
        trainer.fit(group, datamodule=data, ckpt_path=str(jobs[0].run_dir / LAST) if resumed else None)
    except SignalStop as stop:
        timings["fit"] = timings.get("fit", 0.0) + time.perf_counter() - began
        step = trainer.global_step
        for k, job in enumerate(jobs):
            if group.failed_at[k] >= 0:  # it had diverged before the signal came
                _end_failed(job, k, group)
            else:  # its events up to the stop were written as it trained; a resume continues them
                _close_logs(job, "interrupted")
                mine = Path(job.checkpoint.dirpath) if job.checkpoint else None
                saved = [p for p in stop.saved if Path(p).parent == mine]
                stopped = interruption(stop.signum, step, job.cfg, job.run_dir, "resume=auto", saved, sweep=True)
                job.fail(stopped, "interrupted", epochs=step)
        return
    except BaseException:
        for job in jobs:
            _close_logs(job, "failed")
        raise
    timings["fit"] = timings.get("fit", 0.0) + time.perf_counter() - began
    for k, job in enumerate(jobs):
        if group.failed_at[k] < 0:  # as Lightning finalizes a run's loggers when its fit ends; the end of
            for logger in job.loggers:  # the run logs more into them (TensorBoard's writer opens again)
                logger.finalize("success")
    finals: dict[str, torch.Tensor] = {}
    for split in data.splits:
        finals.update(group.measure(split, *data.rows(split)))
    _end_jobs(jobs, group, finals, trainer.global_step, from_start=not resumed)


def _start_logs(jobs: list[Job], group: StackedModule, start_step: int) -> None:
    """Each job's loggers, written as the group trains, so a kill loses none of its points: its
    hyperparameters (as Lightning logs them at a fit's start), its optimum's flat line from epoch 0, then
    every point the group records, for the jobs still alive (a job that diverged logged the points up to
    its failure, as a run of its own does)."""
    for job in jobs:
        job.loggers = build_loggers(job.cfg, job.run_dir, start_step)
        start_logs(job.loggers, job.cfg, job.run_dir)
        if start_step == 0:
            x, y = job.datamodule.splits["train"]
            limit = job.cfg.get("optimum_max_rows", MAX_ROWS)
            log_optimum_line(optimum(job.module.net, x, y, job.module.loss_fn, limit), job.loggers)

    def write(step: int, values: dict[str, torch.Tensor]) -> None:
        for k in group.alive():
            scalars = {name: float(v[k]) for name, v in values.items()}
            for logger in jobs[k].loggers:
                logger.log_metrics(scalars, step=step)
                logger.save()

    group.on_record = write


def _close_logs(job: Job, status: str) -> None:
    for logger in job.loggers:
        logger.finalize(status)
    job.loggers = []


def _end_jobs(
    jobs: list[Job], group: StackedModule, finals: dict[str, torch.Tensor], step: int, from_start: bool = True
) -> None:
    """Each job's end: a failure record for a job that diverged, the end-of-run files for the others.
    ``from_start``: the group trained from epoch 0, so its history holds every point of the loss curves."""
    alive = [k for k in range(len(jobs)) if group.failed_at[k] < 0]
    for k in range(len(jobs)):
        if group.failed_at[k] >= 0:
            _end_failed(jobs[k], k, group)
    if not alive:
        return
    optima, curves = {}, {}
    for k in alive:
        job = jobs[k]
        job.module.net.load_state_dict(group.net.job_state(k))
        x, y = job.datamodule.splits["train"]
        optima[k] = optimum(job.module.net, x, y, job.module.loss_fn, job.cfg.get("optimum_max_rows", MAX_ROWS))
        curves[k] = _curves(group, k, optima[k], step) if from_start else _logged_curves(job, optima[k], step)
    # Each job's figures on the axes it would get alone; jobs whose axes coincide share a layout, drawn
    # here once, before the workers fork.
    layouts = Layouts()
    for k in alive:
        module = jobs[k].module
        layouts.fit(module.is_classifier, getattr(module, "num_classes", 1), *jobs[k].datamodule.splits["train"])
        if curves[k] is not None and keeps_curves(jobs[k].loggers):
            layouts.loss(curves[k])

    def end(k: int) -> float | RunFailed:
        job = jobs[k]
        try:
            loggers = job.loggers  # the ones it trained with (one MLflow run per job)
            values = {name: float(v[k]) for name, v in finals.items()}
            best = job.checkpoint.best_model_path if job.checkpoint else None
            return write_end(job.cfg, job.run_dir, job.module, job.datamodule, loggers, step, values,
                             best_checkpoint=best, optimum=optima[k], curves=curves[k], layouts=layouts,
                             report=False)  # fmt: skip
        except Exception as err:  # this job's end failed (a logger of its own, a file): the others go on
            job.fail(err)
            return RunFailed(f"the end of the run failed: {one_line(err)}", step)  # picklable, for a worker

    # Loggers that write files of their own (TensorBoard, CSV) can be written from forked workers; one
    # that shares a store between runs (MLflow's database) is written from this process alone.
    own_files = all(
        conf._target_.endswith(("TensorBoardLogger", "CSVLogger"))
        for k in alive
        for conf in (jobs[k].cfg.get("logger") or {}).values()
    )
    results = _forked_map(end, alive) if own_files else [end(k) for k in alive]
    for k, value in zip(alive, results, strict=True):
        jobs[k].outcome = value


_WORK = None  # the function forked workers run (inherited at the fork, so it need not be picklable)


def _call(item):
    return _WORK(item)


def _forked_map(work, items: list) -> list:
    """``[work(i) for i in items]``, spread over forked processes, one per CPU core this process may use:
    the end-of-run files of many jobs (figures above all) are independent CPU work. Each child inherits
    the parent's state; only the results (and any error) come back. One process for small groups, where a
    fork would cost more than it saves, and where fork is missing."""
    import multiprocessing
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    workers = min(cores, len(items) // 4)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [work(item) for item in items]
    global _WORK
    _WORK = work
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_call, items, chunksize=max(1, len(items) // (4 * workers)))
    finally:
        _WORK = None


def _end_failed(job: Job, k: int, group: StackedModule) -> None:
    epoch, value = int(group.failed_at[k]), float(group.failed_value[k])
    _close_logs(job, "failed")  # its points up to its failure were written as it trained
    job.fail(diverged(f"the loss became {value} at epoch {epoch}", epoch, job.run_dir), failed_at_epoch=epoch)


def _curves(group: StackedModule, k: int, report: dict | None, step: int) -> dict[str, list[tuple[int, float]]]:
    """Job k's loss curves as its TensorBoard events hold them at the end of its run (figures/loss.png)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for at, values in group.history:
        for tag in ("train/loss", "val/loss"):
            if tag in values:
                curves.setdefault(tag, []).append((at, float(values[tag][k])))
    if report and "loss" in report:
        curves[OPTIMUM_LOSS] = [(0, report["loss"]), (step, report["loss"])]
    return curves


def _logged_curves(job: Job, report: dict | None, step: int) -> dict[str, list[tuple[int, float]]] | None:
    """The loss curves of a job of a resumed group, from its TensorBoard events (the group's history holds
    only what it trained since the resume); None without a TensorBoard logger."""
    from deepbasics.reports.figures import curves_from_events

    conf = next((c for c in (job.cfg.get("logger") or {}).values() if c._target_.endswith("TensorBoardLogger")), None)
    if conf is None:
        return None
    curves = curves_from_events(job.run_dir / conf.get("name", ""))
    if report and "loss" in report:
        curves[OPTIMUM_LOSS] = [(0, report["loss"]), (step, report["loss"])]
    return curves


class DeviceTooSmall(ConfigError):
    """The group's K copies would not fit on its device."""


def _check_device_memory(trainer: L.Trainer, group: StackedModule, data: StackedSplits) -> None:
    """On a GPU, refuse a group whose K copies would not fit in the device's free memory."""
    device = trainer.strategy.root_device
    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    params = sum(p.numel() for p in group.net.params)
    x, _ = data.splits["train"]
    widths = sum(p.shape[1] for p in group.net.params if p.dim() == 3)  # every layer's outputs per row
    rows = max(len(split[0][0]) for split in data.splits.values())
    # parameters, gradients, two optimizer states; the data; activations and their gradients, twice over
    need = 4 * (
        4 * params + sum(s[0].numel() + s[1].numel() for s in data.splits.values()) + 4 * len(x) * rows * widths
    )
    if need > 0.9 * free:
        raise DeviceTooSmall(
            f"{len(group.jobs)} stacked jobs need about {need / 2**30:.1f} GiB on {device}, which has"
            f" {free / 2**30:.1f} GiB free; stack fewer at a time (hydra.launcher.group_size=<n>, or an Optuna"
            " sweep's n_jobs), or use trainer=cpu"
        )


class JobCheckpoints(L.Callback):
    """Each job's own ModelCheckpoint, built from its config as a run of its own builds it, driven by the
    group's trainer at the hooks where it saves, with the trainer's ``callback_metrics`` showing that job's
    metrics alone while it decides. Its saves go through the trainer (``trainer.save_checkpoint``) to
    ``JobCheckpointIO``, which writes that job's part of the group's checkpoint. A group pays for its jobs'
    checkpoints only where one can be due: at epoch ends, and at steps only for the options that save
    between them (every_n_train_steps, train_time_interval). Jobs that failed save nothing more."""

    def __init__(self, jobs: list[Job], group: StackedModule):
        self.jobs, self.group = jobs, group
        self.dirs = {Path(job.checkpoint.dirpath): k for k, job in enumerate(jobs) if job.checkpoint is not None}
        # The callbacks config is part of the group's key, so every job's ModelCheckpoint has these options.
        configured = (jobs[0].cfg.get("callbacks") or {}).values()
        options = next((conf for conf in configured if is_model_checkpoint(conf)), {})
        self.every_n_train_steps = options.get("every_n_train_steps") or 0
        self.timed = options.get("train_time_interval") is not None

    def _each(self, trainer: L.Trainer, hook: str, *args) -> None:
        metrics = trainer.callback_metrics
        shared = dict(metrics)
        try:
            for k in self.group.alive():
                callback = self.jobs[k].checkpoint
                if callback is not None:
                    metrics.clear()
                    metrics.update(self.job_metrics(trainer, k))
                    getattr(callback, hook)(trainer, self.group, *args)
        finally:
            metrics.clear()
            metrics.update(shared)

    def job_metrics(self, trainer: L.Trainer, k: int) -> dict[str, torch.Tensor]:
        """Job k's metrics of this step, as its own run's trainer would hold them."""
        values = {name: v[k].clone() for name, v in self.group.latest.items()}
        values["step"] = torch.tensor(float(trainer.global_step))
        values["epoch"] = torch.tensor(float(trainer.global_step))  # full batches: a step is an epoch
        return values

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for job in self.jobs:
            if job.checkpoint is not None:
                job.checkpoint.setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._each(trainer, "on_train_start")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_train_steps
        if self.timed or (every and trainer.global_step % every == 0):
            self._each(trainer, "on_train_batch_end", outputs, batch, batch_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._each(trainer, "on_validation_end")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._each(trainer, "on_train_epoch_end")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._each(trainer, "on_train_end")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._each(trainer, "on_exception", exception)

    def last_checkpoints(self, trainer: L.Trainer) -> list[tuple[L.pytorch.callbacks.ModelCheckpoint, str]]:
        """(ModelCheckpoint, last.ckpt) of every job still training, for ``LastCheckpoint``."""
        targets = []
        for k in self.group.alive():
            callback = self.jobs[k].checkpoint
            if callback is not None and callback.save_last:
                name = callback.format_checkpoint_name(self.job_metrics(trainer, k), callback.CHECKPOINT_NAME_LAST)
                targets.append((callback, name))
        return targets

    def job_checkpoint(self, checkpoint: dict, path: str) -> dict:
        """Job k's checkpoint, k by the directory it is written to: the group's loop state (the schedule of
        a run of its own) with job k's weights, optimizer state, callbacks' state, hyperparameters and the
        deepbasics part a run of its own writes (``RunState``)."""
        k = self.dirs[Path(path).parent]
        job, group = self.jobs[k], self.group
        own = {key: value for key, value in checkpoint.items() if key not in ("state_dict", "callbacks")}
        own["state_dict"] = {f"net.{name}": value for name, value in group.net.job_state(k).items()}
        if "optimizer_states" in checkpoint:  # what Lightning leaves out of a weights-only checkpoint
            own["optimizer_states"] = [self._optimizer_state(job, k)]
        if "callbacks" in checkpoint:
            own["callbacks"] = {
                job.run_state.state_key: {"rng": job.rng},
                job.checkpoint.state_key: job.checkpoint.state_dict(),
            }
        # save_hyperparameters() records its init arguments under this name, in a run of its own too
        for owner in (job.module, job.datamodule):
            if owner.hparams:
                own[owner.CHECKPOINT_HYPER_PARAMS_NAME] = "kwargs"
                own[owner.CHECKPOINT_HYPER_PARAMS_KEY] = dict(owner.hparams)
        own["deepbasics"] = job.run_state.state(group.trainer, job.module.is_classifier, job.datamodule)
        return own

    def group_checkpoint(self) -> dict:
        """The group's checkpoint from its jobs' own last checkpoints (``Job.resumed``), so that the group
        resumes as a group: the loop state they share (a run of its own's), each job's weights and optimizer
        state stacked, each job's ModelCheckpoint state for it (``load_state_dict``)."""
        from deepbasics.models.stacked import StackedOptimizer

        checkpoints = [job.resumed for job in self.jobs]
        names = self.group.net.names
        params = [torch.stack([c["state_dict"][f"net.{name}"] for c in checkpoints]) for name in names]
        specs = [job.hparams.optimizer for job in self.group.jobs]
        optimizer = StackedOptimizer([torch.nn.Parameter(p) for p in params], specs)
        job_states = [[c["optimizer_states"][0]["state"].get(i, {}) for i in range(len(names))] for c in checkpoints]
        shared = ("epoch", "global_step", "pytorch-lightning_version", "loops")  # a run of its own's
        head = {k: v for k, v in checkpoints[0].items() if k in shared}
        return {
            **head,
            "state_dict": {f"net.params.{i}": p for i, p in enumerate(params)},
            "optimizer_states": [optimizer.stacked_state(job_states)],
            "lr_schedulers": [],
            "callbacks": {
                self.state_key: {
                    "jobs": [
                        c["callbacks"].get(job.checkpoint.state_key) if job.checkpoint else None
                        for c, job in zip(checkpoints, self.jobs, strict=True)
                    ]
                }
            },  # fmt: skip
        }

    def load_state_dict(self, state_dict: dict) -> None:
        for job, state in zip(self.jobs, state_dict["jobs"], strict=True):
            if job.checkpoint is not None and state:
                job.checkpoint.load_state_dict(state)

    def _optimizer_state(self, job: Job, k: int) -> dict:
        """Job k's slice of the stacked optimizer, in the form torch's own optimizer for job k saves."""
        stacked = self.group.trainer.optimizers[0]
        params = list(job.module.net.parameters())
        job.optimizer.state.clear()
        for p, state in zip(params, stacked.job_state(k), strict=True):
            if state:
                job.optimizer.state[p] = state
        return job.optimizer.state_dict()


class JobCheckpointIO(AtomicCheckpointIO):
    """The group's checkpoint written as the checkpoint of the job whose directory it goes to. A group's
    checkpoints of one step change together (``FileSet``, committed by ``LastCheckpoint`` at the end of the
    hook): a kill while they are written leaves every job at the same step, so a resumed sweep stacks the
    same group again (a group of other jobs sums in other orders, off by float32 rounding)."""

    def __init__(self, checkpoints: JobCheckpoints, journal: Path):
        super().__init__()
        self.checkpoints = checkpoints
        self.files = FileSet(journal)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        own = self.checkpoints.job_checkpoint(checkpoint, path)
        self.files.write(path, lambda f: torch.save(own, f))
        self.written[os.path.realpath(path)] = own.get("global_step")

    def remove_checkpoint(self, path) -> None:
        self.files.remove(path)

    def commit(self) -> None:
        self.files.commit()

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return self.checkpoints.group_checkpoint()  # a resumed group: from all its jobs' checkpoints
