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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deepbasics.config.run_dir import LAST
from deepbasics.config.settings import check_settings
from deepbasics.config.sweep_dir import STATE
from deepbasics.data.in_memory import Slices, whole_splits
from deepbasics.errors import ConfigError, RunFailed, one_line
from deepbasics.files import FileSet, lock_run_dir, remove_dead_writes, unlock_run_dir
from deepbasics.models.optimum import OPTIMUM_LOSS, optimum, optimum_points
from deepbasics.models.stacked import StackedModule, StackedOptimizer
from deepbasics.reports.figures import FitPlot, curves_from_events
from deepbasics.run.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_model,
    build_trainer,
    is_model_checkpoint,
    start_logs,
)
from deepbasics.run.callbacks import ConsoleLog, LastCheckpoint, RunState, SignalStop, write
from deepbasics.run.checkpoints import AtomicCheckpointIO, read_checkpoint
from deepbasics.run.finish import Run, write_end
from deepbasics.run.rng import rng_states
from deepbasics.run.training import diverged, interruption

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One job of a group: its config (resolved), and once built its module, data and own checkpoint
    callback; ``outcome`` is its monitored value or the error that ended it."""

    cfg: DictConfig
    label: str
    run: Run = field(init=False)
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
        self.run = Run.of(self.cfg)

    def fail(self, err: BaseException, status: str = "failed", **extra) -> None:
        from deepbasics.run.training import record_status

        self.outcome = err
        identity = {k: v for k, v in self.run.identity(status).items() if k != "status"}
        record_status(self.run.dir, identity, status, one_line(err) if status == "failed" else str(err), **extra)


def train_group(cfgs: Sequence[DictConfig], labels: Sequence[str], timings: dict | None = None) -> list:
    """Train these jobs' configs (same net shape, optimizer kind and schedule: the launcher groups them) as
    stacked models; one outcome per job, in order. ``timings["fit"]`` gets the seconds spent in fit."""
    jobs = [Job(cfg, label) for cfg, label in zip(cfgs, labels, strict=True)]
    _allow_open_files(len(jobs))
    held = []
    try:
        for job in jobs:  # first: a job whose directory another process holds writes nothing into it
            try:
                lock_run_dir(job.run.dir)
                held.append(job.run.dir)
                remove_dead_writes(job.run.dir)  # a checkpoint a kill cut short
            except (ConfigError, OSError) as err:  # held by another process, or out of file descriptors
                job.outcome = err
        shared: dict[str, L.LightningDataModule] = {}
        built = [job for job in jobs if job.outcome is None and _build(job, shared)]
        shapes: dict[tuple, list[Job]] = {}
        for job in built:  # the data may differ per job, their shapes may not
            shape = tuple((name, tuple(x.shape)) for name, (x, _) in job.datamodule.splits.items())
            shapes.setdefault(shape, []).append(job)
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
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


def _build(job: Job, shared: dict) -> bool:
    """The job's data, module (initialised exactly as a run of its own: same seed, same order of random
    draws) and checkpoint callback; False when that fails (the job fails alone, recorded, as it would
    under the basic launcher)."""
    cfg = job.cfg
    try:
        check_settings(cfg)
        L.seed_everything(cfg.seed, verbose=False)
        key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
        if key not in shared:  # data builders draw from their own seeded generators: sharing changes nothing
            shared[key] = build_datamodule(cfg.data)
        job.datamodule = shared[key]
        job.module = build_model(cfg.model, job.datamodule)
        if whole_splits(job.datamodule) is None:
            raise ConfigError("data: its splits are not held in memory, so its jobs cannot be stacked")
        job.rng = rng_states()  # what a run of its own would store: nothing random happens after the init
        if cfg.get("resume"):  # a job of a resumed sweep: its own last checkpoint (config.sweep_dir)
            job.resumed = read_checkpoint(Path(cfg.resume) / LAST, key="resume")
            job.rng = job.resumed["callbacks"][RunState.__qualname__]["rng"]
        # torch's own optimizer for this job: the form its checkpoints keep the optimizer state in
        job.optimizer = instantiate(job.module.hparams.optimizer)(job.module.net.parameters())
        callbacks = build_callbacks(cfg.get("callbacks"), job.run.dir)
        job.checkpoint = next((c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None)
        job.run_state = RunState(job.run.config)
    except Exception as err:
        job.fail(err)
        return False
    return True


class StackedSplits(L.LightningDataModule):
    """The data of K jobs trained as one stacked model: each split as one batch with a leading job axis, x
    (K, N, features) and y (K, N, 1). Jobs that share one DataModule share its tensors (a view, no copy)."""

    def __init__(self, datamodules: list):
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for split in datamodules[0].splits:
            parts = [dm.splits[split] for dm in datamodules]
            if all(p is parts[0] for p in parts):
                x, y = parts[0]
                self.splits[split] = (x.expand(len(parts), *x.shape), y.expand(len(parts), *y.shape))
            else:
                self.splits[split] = (torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]))
        self._placed: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def rows(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if (split, str(device)) not in self._placed:
            x, y = self.splits[split]
            self._placed[split, str(device)] = (x.to(device), y.to(device))
        return self._placed[split, str(device)]

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return batch  # placed once (``rows``)

    def train_dataloader(self):
        return Slices(*self.rows("train"), None)

    def val_dataloader(self):
        return Slices(*self.rows("val"), None) if "val" in self.splits else []


def _train_stacked(jobs: list[Job], timings: dict) -> None:
    first = jobs[0].cfg
    torch.set_num_threads(first.threads)
    group = StackedModule([job.module for job in jobs], first.log_every)
    data = StackedSplits([job.datamodule for job in jobs])
    checkpoints = JobCheckpoints(jobs, group)
    console = ConsoleLog(first.monitor.metric, first.monitor.mode, [job.label for job in jobs])
    callbacks = [console, checkpoints, LastCheckpoint(checkpoints.last_checkpoints)]
    root = jobs[0].run.dir.parent
    resumed = jobs[0].resumed  # the launcher groups the jobs of a resumed group, all at the same step
    start = resumed["global_step"] if resumed else 0
    io = JobCheckpointIO(checkpoints, root / STATE / f"journal-{jobs[0].label}.json")  # config.sweep_dir's folder
    trainer = build_trainer(
        first.trainer, root, callbacks, [], first.epochs, first.val_every, first.log_every, checkpoint_io=io
    )
    _check_device_memory(trainer, group, data)
    _start_logs(jobs, group, start)
    began = time.perf_counter()
    try:
        trainer.fit(group, datamodule=data, ckpt_path=str(jobs[0].run.dir / LAST) if resumed else None)
    except SignalStop as stop:
        timings["fit"] = timings.get("fit", 0.0) + time.perf_counter() - began
        done = trainer.current_epoch + 1
        for k, job in enumerate(jobs):
            if group.failed_at[k] >= 0:  # it had diverged before the signal came
                _end_failed(job, k, group)
            else:  # its events up to the stop were written as it trained; a resume continues them
                _close_logs(job, "interrupted")
                mine = Path(job.checkpoint.dirpath) if job.checkpoint else None
                saved = [p for p in stop.saved if Path(p).parent == mine]
                job.fail(
                    interruption(stop.signum, done, job.run, "resume=auto", saved, sweep=True),
                    "interrupted",
                    epochs=done,
                )
        return
    except BaseException:
        for job in jobs:
            _close_logs(job, "failed")
        raise
    timings["fit"] = timings.get("fit", 0.0) + time.perf_counter() - began
    for k, job in enumerate(jobs):
        if group.failed_at[k] < 0:  # as Lightning finalizes a run's loggers when its fit ends
            for logger in job.loggers:
                logger.finalize("success")
    finals: dict[str, torch.Tensor] = {}
    for split in data.splits:
        finals.update(group.measure(split, *data.rows(split)))
    _end_jobs(jobs, group, finals, trainer.global_step, from_start=not resumed)


def _start_logs(jobs: list[Job], group: StackedModule, start_step: int) -> None:
    """Each job's loggers, written as the group trains, so a kill loses none of its points: its settings,
    its optimum's flat line from epoch 0, then every point the group records, for the jobs still alive (a
    job that diverged logged the points up to its failure, as a run of its own does)."""
    for job in jobs:
        job.loggers = build_loggers(job.cfg.get("logger"), job.run.dir, start_step)
        start_logs(job.loggers, job.run.settings, job.run.dir)
        if start_step == 0:
            write(job.loggers, optimum_points(optimum(job.module, *job.datamodule.splits["train"])), 0)

    def record(epoch: int, values: dict[str, torch.Tensor]) -> None:
        for k in group.alive():
            write(jobs[k].loggers, {name: v[k] for name, v in values.items()}, epoch)
            for logger in jobs[k].loggers:
                logger.save()

    group.on_record = record


def _close_logs(job: Job, status: str) -> None:
    for logger in job.loggers:
        logger.finalize(status)
    job.loggers = []


def _end_jobs(jobs: list[Job], group: StackedModule, finals: dict, step: int, from_start: bool = True) -> None:
    """Each job's end: a failure record for a job that diverged, the end-of-run files for the others.
    ``from_start``: the group trained from epoch 0, so its history holds every point of the loss curves."""
    alive = group.alive()
    for k in range(len(jobs)):
        if group.failed_at[k] >= 0:
            _end_failed(jobs[k], k, group)
    optima, curves, plots = {}, {}, {}
    for k in alive:
        job = jobs[k]
        job.module.net.load_state_dict(group.net.job_state(k))
        train = job.datamodule.splits["train"]
        optima[k] = optimum(job.module, *train)
        curves[k] = _curves(group, k, optima[k], step) if from_start else _logged_curves(job, optima[k], step)
        if id(job.datamodule) not in plots:  # drawn here once per data, before the workers fork
            plots[id(job.datamodule)] = FitPlot(job.module, *train)

    def end(k: int) -> float | RunFailed:
        job = jobs[k]
        try:
            splits = job.datamodule.splits
            evaluated = ("test", *splits["test"]) if "test" in splits else ("train", *splits["train"])
            values = {name: float(v[k]) for name, v in finals.items()}
            # as trainer.test logs a run's test points at its end (and trainer.validate its val points, when
            # its last epoch did not validate)
            validated = step % job.cfg.val_every == 0
            write(
                job.loggers,
                {n: v for n, v in values.items() if n.startswith("test/") or (n.startswith("val/") and not validated)},
                step,
            )
            best = (job.checkpoint.best_model_path if job.checkpoint else None) or None
            return write_end(
                job.run,
                job.module,
                splits["train"],
                job.loggers,
                step,
                values,
                evaluated,
                best_checkpoint=best,
                optimum=optima[k],
                curves=curves[k],
                plot=plots[id(job.datamodule)],
                report=False,
            )
        except Exception as err:  # this job's end failed (a logger of its own, a file): the others go on
            job.fail(err)
            return RunFailed(f"the end of the run failed: {one_line(err)}", step)  # picklable, for a worker

    # Loggers that write files of their own (TensorBoard, CSV) can be written from forked workers; one
    # that shares a store between runs (MLflow's database) is written from this process alone.
    own_files = all(
        part._target_.endswith(("TensorBoardLogger", "CSVLogger"))
        for k in alive
        for part in (jobs[k].cfg.get("logger") or {}).values()
    )
    results = _forked_map(end, alive) if own_files else [end(k) for k in alive]
    for k, value in zip(alive, results, strict=True):
        jobs[k].outcome = value


_WORK = None  # the function forked workers run (inherited at the fork, so it need not be picklable)


def _call(item):
    return _WORK(item)


def _forked_map(work, items: list) -> list:
    """``[work(i) for i in items]``, spread over forked processes, one per CPU core this process may use:
    the end-of-run files of many jobs (figures above all) are independent CPU work. One process for small
    groups, where a fork would cost more than it saves, and where fork is missing."""
    import multiprocessing

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
    job.fail(diverged(f"the loss became {value} at epoch {epoch}", epoch, job.run.dir), failed_at_epoch=epoch)


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
    part = next((p for p in (job.cfg.get("logger") or {}).values() if p._target_.endswith("TensorBoardLogger")), None)
    if part is None:
        return None
    curves = curves_from_events(job.run.dir / part.get("name", ""))
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
    widths = sum(p.shape[1] for p in group.net.params if p.dim() == 3)  # every layer's outputs per row
    rows = max(split[0].shape[1] for split in data.splits.values())
    # parameters, gradients, two optimizer states; the data; activations and their gradients, twice over
    need = 4 * (
        4 * params
        + sum(s[0].numel() + s[1].numel() for s in data.splits.values())
        + 4 * len(group.jobs) * rows * widths
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
    checkpoints only where one can be due (their options are part of the group's key); jobs that failed
    save nothing more."""

    def __init__(self, jobs: list[Job], group: StackedModule):
        self.jobs, self.group = jobs, group
        self.dirs = {Path(job.checkpoint.dirpath): k for k, job in enumerate(jobs) if job.checkpoint is not None}
        # Its options are part of the group's key: every job's ModelCheckpoint saves between epochs or none does
        options = next(
            (part for part in (jobs[0].cfg.get("callbacks") or {}).values() if is_model_checkpoint(part)), {}
        )
        self.between = bool(options.get("every_n_train_steps") or options.get("train_time_interval"))
        self.every = options.get("every_n_epochs") or 1

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
        """Job k's metrics of this epoch, as its own run's trainer would hold them."""
        return {name: v[k].clone() for name, v in self.group.latest.items()} | {
            "step": torch.tensor(float(trainer.global_step))
        }

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for job in self.jobs:
            if job.checkpoint is not None:
                job.checkpoint.setup(trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module) -> None:
        self._each(trainer, "on_train_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.between:  # a group pays for its jobs' checkpoints only where one can be due
            self._each(trainer, "on_train_batch_end", outputs, batch, batch_idx)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._each(trainer, "on_validation_end")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every == 0:  # where one can be due
            self._each(trainer, "on_train_epoch_end")

    def on_train_end(self, trainer, pl_module) -> None:
        self._each(trainer, "on_train_end")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
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
        own["deepbasics"] = job.run_state.state(group.trainer, job.module.is_classifier)
        return own

    def group_checkpoint(self) -> dict:
        """The group's checkpoint from its jobs' own last checkpoints (``Job.resumed``), so that the group
        resumes as a group: the loop state they share (a run of its own's), each job's weights and optimizer
        state stacked, each job's ModelCheckpoint state for it (``load_state_dict``)."""
        checkpoints = [job.resumed for job in self.jobs]
        names = self.group.net.names
        params = [torch.stack([c["state_dict"][f"net.{name}"] for c in checkpoints]) for name in names]
        optimizer = StackedOptimizer(
            [torch.nn.Parameter(p) for p in params], [j.hparams.optimizer for j in self.group.jobs]
        )
        job_states = [[c["optimizer_states"][0]["state"].get(i, {}) for i in range(len(names))] for c in checkpoints]
        shared = ("epoch", "global_step", "pytorch-lightning_version", "loops")  # a run of its own's
        jobs = [
            c["callbacks"].get(job.checkpoint.state_key) if job.checkpoint else None
            for c, job in zip(checkpoints, self.jobs, strict=True)
        ]
        return {
            **{k: v for k, v in checkpoints[0].items() if k in shared},
            "state_dict": {f"net.params.{i}": p for i, p in enumerate(params)},
            "optimizer_states": [optimizer.stacked_state(job_states)],
            "lr_schedulers": [],
            "callbacks": {self.state_key: {"jobs": jobs}},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        for job, state in zip(self.jobs, state_dict["jobs"], strict=True):
            if job.checkpoint is not None and state:
                job.checkpoint.load_state_dict(state)

    def _optimizer_state(self, job: Job, k: int) -> dict:
        """Job k's slice of the stacked optimizer, in the form torch's own optimizer for job k saves."""
        stacked = self.group.trainer.optimizers[0]
        job.optimizer.state.clear()
        for p, state in zip(job.module.net.parameters(), stacked.job_state(k), strict=True):
            if state:
                job.optimizer.state[p] = state
        return job.optimizer.state_dict()


class JobCheckpointIO(AtomicCheckpointIO):
    """The group's checkpoint written as the checkpoint of the job whose directory it goes to. A group's
    checkpoints of one epoch change together (``FileSet``, committed by ``LastCheckpoint`` at the end of
    the hook): a kill while they are written leaves every job at the same epoch, so a resumed sweep stacks
    the same group again (a group of other jobs sums in other orders, off by float32 rounding)."""

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
