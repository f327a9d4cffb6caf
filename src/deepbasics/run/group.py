"""A sweep's jobs trained as one stacked model (``models.stacked``; launcher: ``deepbasics_vectorized``) in Lightning's
loop, on a run of its own's schedule. Each job leaves what such a run leaves (checkpoints it resumes, logger events,
model.pt, figures, metrics.json) and returns its monitored value or error; a non-finite loss fails it alone."""

from __future__ import annotations

import functools
import gc
import json
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from deepbasics.config.run_dir import LAST
from deepbasics.config.settings import check_settings
from deepbasics.config.sweep_dir import STATE
from deepbasics.data.in_memory import InMemoryDataModule, whole_splits
from deepbasics.errors import ConfigError, Interrupted, RunFailed, one_line
from deepbasics.files import FileSet, lock_run_dir, unlock_run_dir
from deepbasics.models.optimum import optimum, optimum_points
from deepbasics.models.stacked import StackedModule
from deepbasics.reports.figures import FitPlot, fit_axes
from deepbasics.run import build, memory
from deepbasics.run.callbacks import STOP, ConsoleLog, LastCheckpoint, RunState, SignalStop, rng_states, write
from deepbasics.run.callbacks import stopped_early as job_stopped  # of one job's EarlyStopping
from deepbasics.run.checkpoints import AtomicCheckpointIO, read_checkpoint
from deepbasics.run.finish import Run, write_end
from deepbasics.run.training import diverged, interruption, record_status

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One job of a group: its config (resolved), and once built its module, data, own ModelCheckpoint and
    the random state a run of its own would store; ``outcome``: its monitored value or what ended it."""

    cfg: DictConfig
    label: str
    run: Run
    module: L.LightningModule | None = None
    datamodule: L.LightningDataModule | None = None
    checkpoint: L.pytorch.callbacks.ModelCheckpoint | None = None
    callbacks: list = field(default_factory=list)  # its ModelCheckpoint and EarlyStopping, in Lightning's order
    rng: dict | None = None
    resumed: dict | None = None  # the checkpoint it continues from (a resumed sweep's)
    loggers: list = field(default_factory=list)
    outcome: float | BaseException | None = None

    def fail(self, err: BaseException, status: str = "failed", **extra) -> None:
        """Its outcome and record; its loggers, written as it trained, end with ``status``."""
        self.close_logs(status)
        self.outcome = err
        record_status(self.run.dir, self.run.identity(status), status, one_line(err), **extra)

    def close_logs(self, status: str) -> None:
        for logger in self.loggers:
            logger.finalize(status)
        self.loggers = []


def train_group(cfgs: list[DictConfig], labels: list[str], timings: dict) -> list:
    """Train the launcher's group of jobs stacked: one outcome each, in order; timings["fit"] gets fit's seconds."""
    jobs = [Job(cfg, label, Run.of(cfg)) for cfg, label in zip(cfgs, labels, strict=True)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # every job holds its directory's lock open
    if soft != resource.RLIM_INFINITY and soft < len(jobs) + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    shared, shapes = {}, {}
    threading.stack_size(memory.WRITER_STACK)  # RLIMIT_AS counts each thread's stack: 10,000 jobs, 10,000 threads
    try:
        for job in jobs:  # first: a job whose directory another process holds writes nothing into it
            try:
                lock_run_dir(job.run.dir)
            except (ConfigError, OSError) as err:  # held by another process, or out of file descriptors
                job.outcome = err
        for job in [job for job in jobs if job.outcome is None and _build(job, shared)]:
            shape = tuple((name, tuple(x.shape)) for name, (x, _) in job.datamodule.splits.items())
            shapes.setdefault(shape, []).append(job)  # the data may differ per job, their shapes may not
        stop = None  # the signal that stopped a part: the parts after it do not start
        for members in shapes.values():
            most = len(members)
            while members and stop is None:  # as many as fit in memory now, the rest after them
                part = members[:most]
                try:
                    part = part[: _size(part, most)]
                    if not _train_stacked(part, timings):  # out of memory, nothing written: in halves, down to one
                        most = (len(part) + 1) // 2
                        log.info(f"#{part[0].label}-#{part[-1].label}: {len(part)} jobs ran out of memory in their"
                                 f" first step; trying groups of {most}")  # fmt: skip
                        continue
                except Exception as err:  # what would have failed each job alone fails each job of the group
                    for job in part:
                        if job.outcome is None:
                            job.fail(err)
                finally:
                    gc.collect()  # the trainer and the group refer to each other: free their memory for the next
                stop = next((job.outcome for job in part if isinstance(job.outcome, Interrupted)), None)
                members = members[len(part) :]
    finally:
        for job in jobs:  # a directory this process does not hold is left as it is
            unlock_run_dir(job.run.dir)
    return [stop if job.outcome is None else job.outcome for job in jobs]  # None: a signal kept it from starting


def _build(job: Job, shared: dict) -> bool:
    """Build the job's data, module (same seed and draws as a run of its own) and ModelCheckpoint; False on failure."""
    cfg = job.cfg
    try:
        check_settings(cfg)
        L.seed_everything(cfg.seed, verbose=False)
        key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
        if key not in shared:  # data builders draw from their own seeded generators: sharing changes nothing
            shared[key] = build.build_datamodule(cfg.data)
        job.datamodule = shared[key]
        if whole_splits(job.datamodule) is None:
            raise ConfigError("data: its splits are not held in memory, so its jobs cannot be stacked")
        first = next(iter(shared.values())).splits  # rows equal to the first job's (a seed that shuffles nothing)
        for name, (x, y) in job.datamodule.splits.items():  # are its tensors: the group stacks them as one view
            if name in first and torch.equal(x, first[name][0]) and torch.equal(y, first[name][1]):
                job.datamodule.splits[name] = first[name]
        job.module = build.build_model(cfg.model, job.datamodule)
        build.check_before_training(cfg, job.module, job.datamodule)  # before training, as a run of its own
        job.rng = rng_states()  # what a run of its own would store: nothing random happens after the init
        callbacks = build.build_callbacks(cfg.get("callbacks"), job.run.dir)
        job.checkpoint = next((c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None)
        job.callbacks = sorted(callbacks, key=lambda c: isinstance(c, L.pytorch.callbacks.Checkpoint))
        if cfg.get("resume"):  # a job of a resumed sweep: its weights and callbacks from its own last checkpoint
            job.resumed = read_checkpoint(Path(cfg.resume) / LAST, key="resume")
            job.rng = job.resumed["callbacks"][RunState.__qualname__]["rng"]
            job.module.load_state_dict(job.resumed["state_dict"])
            for callback in callbacks:  # as Lightning restores a run's
                callback.load_state_dict(job.resumed["callbacks"][callback.state_key])
    except Exception as err:
        job.fail(err)
        return False
    return True


class StackedSplits(InMemoryDataModule):
    """K jobs' data, each split with a leading job axis: x (K, N, features), y (K, N, 1). Jobs that share one
    DataModule share its tensors (a view, no copy). Mini-batches: each job's rows in the order it has alone."""

    def __init__(self, datamodules: list):
        super().__init__()
        self.datamodules = datamodules
        for split in datamodules[0].splits:
            columns = zip(*(dm.splits[split] for dm in datamodules), strict=True)  # every job's x, every job's y
            self.splits[split] = tuple(
                t[0].expand(len(t), *t[0].shape) if all(u is t[0] for u in t) else torch.stack(t) for t in columns
            )

    @property
    def batch_size(self) -> int | None:
        return self.datamodules[0].batch_size

    def epoch_order(self, trainer: L.Trainer, rows: int) -> torch.Tensor:
        return torch.stack([dm.epoch_order(trainer, rows) for dm in self.datamodules])


def _size(jobs: list[Job], most: int) -> int:
    """How many of the jobs (``most`` at most) fit in the memory the process may use now; one line when fewer."""
    dm = jobs[0].datamodule
    own_data = len({id(job.datamodule.splits["train"][0]) for job in jobs[:most]}) > 1  # else one view for all
    data = sum(t.numel() * t.element_size() for split in dm.splits.values() for t in split) if own_data else 0
    need = memory.job_bytes(jobs[0].module, *dm.splits["train"]) + data + memory.WRITER_STACK
    have, limit = memory.room(jobs[0].cfg.trainer.get("accelerator") in ("auto", "gpu", "cuda"))
    size = max(1, min(most, len(jobs), int(0.8 * have // need)))  # a margin for Lightning, metrics, checkpoints
    if size < min(most, len(jobs)):
        log.info(f"#{jobs[0].label}-#{jobs[-1].label}: {len(jobs)} jobs need about {len(jobs) * need / 2**20:,.0f}"
                 f" MiB, {limit} leaves {have / 2**20:,.0f} MiB: {size} of them first")  # fmt: skip
    return size


def _train_stacked(jobs: list[Job], timings: dict) -> bool:
    """Train the jobs as one group; False when they ran out of memory before anything was written."""
    first = jobs[0].cfg
    torch.set_num_threads(first.threads)
    try:  # memory runs short first here: the stacked data and one training step, probed before anything is written
        group = StackedModule([job.module for job in jobs], first.log_every)
        data = StackedSplits([job.datamodule for job in jobs])
        checkpoints = JobCheckpoints(jobs, group)
        console = ConsoleLog(first.monitor.metric, first.monitor.mode, [job.label for job in jobs])
        train_point = L.pytorch.callbacks.LambdaCallback(on_train_epoch_end=group.record_epoch)  # first: see its doc
        callbacks = [train_point, console, checkpoints, LastCheckpoint(checkpoints.last_checkpoints)]
        root, resumed = jobs[0].run.dir.parent, jobs[0].resumed  # the launcher groups jobs at the same step
        io = JobCheckpointIO(checkpoints, root / STATE / f"journal-{jobs[0].label}.json")
        trainer = build.build_trainer(first, root, callbacks, [], first.epochs, io=io)
        group.probe(data.rows("train"), trainer.strategy.root_device)
    except Exception as err:  # out of memory (Python's, CUDA's or torch's CPU allocator's): smaller groups may fit
        if len(jobs) > 1 and (isinstance(err, MemoryError | torch.cuda.OutOfMemoryError) or "allocate" in str(err)):
            return False
        raise
    _start_logs(jobs, group, resumed["global_step"] if resumed else 0)
    began = time.perf_counter()
    try:
        trainer.fit(group, datamodule=data, ckpt_path=str(jobs[0].run.dir / LAST) if resumed else None)
    except SignalStop as stop:
        done = trainer.current_epoch + 1
        for k, job in enumerate(jobs):
            if group.failed_at[k] >= 0:  # it had diverged before the signal came
                _end_failed(job, k, group)
            else:  # its events up to the stop were written as it trained; a resume continues them
                saved = [p for p in stop.saved if job.checkpoint and Path(p).parent == Path(job.checkpoint.dirpath)]
                at = group.stopped[k][1]["epoch"] if k in group.stopped else done  # stopped early: its last.ckpt then
                saved = [str(job.run.dir / LAST)] if k in group.stopped and (job.run.dir / LAST).is_file() else saved
                job.fail(interruption(stop.signum, at, job.run, saved), "interrupted", epochs=at)
        return True
    except BaseException:
        for job in jobs:
            job.close_logs("failed")
        raise
    finally:
        timings["fit"] = timings.get("fit", 0.0) + time.perf_counter() - began
    finals = {k: v for split in data.splits for k, v in group.measure(split, *data.rows(split)).items()}
    _end_jobs(jobs, group, finals, trainer.global_step)
    return True


def _start_logs(jobs: list[Job], group: StackedModule, start_step: int) -> None:
    """Each job's loggers, written as the group trains (a kill loses no point): settings, optimum line, live points."""
    for job in jobs:
        job.loggers = build.build_loggers(job.cfg.get("logger"), job.run.dir, start_step)
        build.start_logs(job.loggers, job.run.settings, job.run.dir)
        if start_step == 0:
            write(job.loggers, optimum_points(optimum(job.module, *job.datamodule.splits["train"])), 0)

    def record(epoch: int, values: dict[str, torch.Tensor]) -> None:
        for k in group.active():
            write(jobs[k].loggers, {name: v[k] for name, v in values.items()}, epoch)

    group.on_record = record


def _end_jobs(jobs: list[Job], group: StackedModule, finals: dict, step: int) -> None:
    """Each job's end: a diverged job's failure record, the others' end-of-run files (loss curves from their events,
    as a run of its own's)."""
    alive = group.alive()
    for k in set(range(len(jobs))) - set(alive):
        _end_failed(jobs[k], k, group)
    layouts, optima = {}, {}  # fit layouts shared where jobs' axes coincide: drawn before the fork
    for k in alive:
        for logger in jobs[k].loggers:  # as Lightning finalizes a run's loggers when its fit ends
            logger.finalize("success")
        jobs[k].module.net.load_state_dict(group.net.job_state(k))
        train = jobs[k].datamodule.splits["train"]
        optima[k] = optimum(jobs[k].module, *train)
        axes = fit_axes(jobs[k].module, *train)
        layouts[axes] = layouts.get(axes) or (axes and FitPlot(axes))

    def end(k: int) -> float | RunFailed:
        job = jobs[k]
        at, stopped = group.stopped.get(k, (step, {"epoch": job.cfg.epochs}))  # where it stopped early, if it did
        try:
            values = {name: float(v[k]) for name, v in finals.items()}
            # as trainer.test logs test points at a run's end (trainer.validate val points, if the last epoch did not)
            ended = ("test/",) if stopped["epoch"] % job.cfg.val_every == 0 else ("test/", "val/")
            write(job.loggers, {name: v for name, v in values.items() if name.startswith(ended)}, at)
            best = (job.checkpoint.best_model_path if job.checkpoint else None) or None
            return write_end(
                job.run,
                job.module,
                job.datamodule,
                job.loggers,
                at,
                values,
                stopped if k in group.stopped else None,
                best_checkpoint=best,
                optimum=optima[k],
                layouts=layouts,
            )
        except Exception as err:  # this job's end failed (a logger of its own, a file): the others go on
            job.fail(err)
            return RunFailed(f"the end of the run failed: {one_line(err)}", step)  # picklable, for a worker

    # Loggers with files of their own (TensorBoard, CSV) may write from forked workers; MLflow's shared store only here.
    own = (L.pytorch.loggers.TensorBoardLogger, L.pytorch.loggers.CSVLogger)
    own_files = all(isinstance(logger, own) for k in alive for logger in jobs[k].loggers)
    for k, value in zip(alive, forked_map(end, alive) if own_files else map(end, alive), strict=True):
        jobs[k].outcome = value


_WORK = _PARENT = None  # the function forked workers run (inherited at the fork, no pickling) and their parent


def _worker() -> None:
    """A worker: SIGTERM raises as Ctrl-C does (a group saves, stops); if its sweep's process dies, as after SIGTERM."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def watch() -> None:
        while os.getppid() == _PARENT:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def _call(item):
    try:
        return _WORK(item)
    except (KeyboardInterrupt, SystemExit) as err:  # a signal before or after training: this item stops there
        return Interrupted(f"{type(err).__name__} in a worker; continue with the same command and resume=auto", 130, 0)
    finally:
        if os.getppid() != _PARENT:  # no one to hand the result to, nor another item to come
            os._exit(0)


def usable_cores() -> int:  # 1 where the OS cannot say: no forked workers there
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def forked_map(work, items: list, each: int = 4) -> list:
    """``[work(i) for i in items]`` over forked processes, one per usable core and ``each`` items at least (groups, and
    jobs' ends, figures above all); here where a fork costs more than it saves, in a worker already, or once CUDA has
    started. Workers share the memory groups are sized to; one that dies fails the map (BrokenProcessPool)."""
    global _WORK, _PARENT
    workers = min(usable_cores(), len(items) // each)
    forks = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized()
    if workers < 2 or not forks or memory.SHARED_BY > 1:
        return [work(item) for item in items]
    _WORK, _PARENT, memory.SHARED_BY = work, os.getpid(), workers
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), _worker)
    results = pool.map(_call, items, chunksize=max(1, len(items) // (4 * workers)))  # forks them, Ctrl-C as it is
    # Ctrl-C (or SIGTERM to the process group) reaches the workers too; a signal to this process alone reaches
    # them through STOP: no group starts, and the training ones save and stop at an epoch end
    previous = {s: signal.signal(s, lambda *_: STOP.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return list(results)
    finally:
        pool.shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _WORK, memory.SHARED_BY = None, 1


def _end_failed(job: Job, k: int, group: StackedModule) -> None:
    epoch, value = int(group.failed_at[k]), float(group.failed_value[k])
    job.fail(diverged(f"the loss became {value} at epoch {epoch}", epoch, job.run.dir), failed_at_epoch=epoch)


class JobCheckpoints(L.pytorch.callbacks.Checkpoint):
    """Each job's ModelCheckpoint, run at its saving hooks while ``callback_metrics`` hold that job's metrics alone;
    saves go to ``JobCheckpointIO``. Called only where one can be due (the options are in the group's key)."""

    def __init__(self, jobs: list[Job], group: StackedModule):
        self.jobs, self.group = jobs, group
        self.dirs = {Path(job.checkpoint.dirpath): k for k, job in enumerate(jobs) if job.checkpoint}
        alone = len(jobs[0].callbacks) == 1 and jobs[0].checkpoint  # else an EarlyStopping may check at any epoch end
        self.every = (alone.every_n_epochs if alone else None) or 1

    def _each(self, hook: str, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        metrics, was, shared = trainer.callback_metrics, trainer.should_stop, dict(trainer.callback_metrics)
        try:
            for k in self.group.active():
                metrics.clear()
                metrics.update(self.job_metrics(trainer, k))
                for callback in self.jobs[k].callbacks:
                    getattr(callback, hook)(trainer, pl_module, *args, **kwargs)
                    last = trainer.current_epoch + 1 >= trainer.max_epochs  # a run of its own completes there
                    if k not in self.group.stopped and not last and (stopped := job_stopped(trainer, [callback])):
                        self.group.stop(k, stopped)  # its EarlyStopping: this job alone stops
                trainer.should_stop = was
        finally:
            metrics.clear()
            metrics.update(shared)
            trainer.should_stop = was or len(self.group.stopped) == len(self.group.alive())  # the last one ends it

    setup = functools.partialmethod(_each, "setup")  # EarlyStopping's: when it checks
    on_validation_end = functools.partialmethod(_each, "on_validation_end")
    on_train_end = functools.partialmethod(_each, "on_train_end")
    on_exception = functools.partialmethod(_each, "on_exception")

    def job_metrics(self, trainer: L.Trainer, k: int) -> dict[str, torch.Tensor]:
        """Job k's metrics of this epoch, as its own run's trainer would hold them."""
        step = {"step": torch.tensor(float(trainer.global_step))}
        return {name: v[k].clone() for name, v in self.group.latest.items()} | step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every == 0:
            self._each("on_train_epoch_end", trainer, pl_module)

    def last_checkpoints(self, trainer: L.Trainer, wanted=bool) -> list:
        """(ModelCheckpoint, last.ckpt) of each live job, if the jobs' ModelCheckpoints (one config) keep one."""
        first = self.jobs[0].checkpoint
        if first is None or not first.save_last:
            return []
        due = [k for k in self.group.active() if wanted(first) or k in self.group.stopped]  # stopping: as at its end
        last = [(self.jobs[k].checkpoint, self.job_metrics(trainer, k)) for k in due]
        return [(c, c.format_checkpoint_name(metrics, c.CHECKPOINT_NAME_LAST)) for c, metrics in last]

    def job_checkpoint(self, checkpoint: dict, path: str) -> dict:
        """Job k's checkpoint (k by its directory): the group's loop state with job k's weights, optimizer state (as
        torch's own optimizer keeps it), callback states, hyperparameters and the deepbasics part."""
        k = self.dirs[Path(path).parent]
        job, group = self.jobs[k], self.group
        own = {key: value for key, value in checkpoint.items() if key not in ("state_dict", "callbacks")}
        own["state_dict"] = {f"net.{name}": value for name, value in group.net.job_state(k).items()}
        if "optimizer_states" in checkpoint:  # what Lightning leaves out of a weights-only checkpoint
            states = enumerate(group.trainer.optimizers[0].job_state(k))  # by parameter index, as torch's state_dict
            groups = group.optimizers_alone[k].state_dict()["param_groups"]
            own["optimizer_states"] = [{"state": {i: state for i, state in states if state}, "param_groups": groups}]
            own["lr_schedulers"] = [group.schedules.each[k].state_dict()] if group.schedules else []
        if "callbacks" in checkpoint:
            own["callbacks"] = {RunState.__qualname__: {"rng": job.rng}} | {
                callback.state_key: callback.state_dict() for callback in job.callbacks
            }
        for owner in (job.module, job.datamodule):  # save_hyperparameters' record, as in a run of its own
            if owner.hparams:
                own[owner.CHECKPOINT_HYPER_PARAMS_NAME] = "kwargs"
                own[owner.CHECKPOINT_HYPER_PARAMS_KEY] = dict(owner.hparams)
        state = RunState(job.run.config, job.datamodule.standardization)  # a run's: its inputs' scale too
        own["deepbasics"] = state.state(group.trainer, job.module.is_classifier)
        if k in group.stopped:  # its epoch as a run's checkpoint of this hook counts it
            own["deepbasics"]["stopped"] = group.stopped[k][1] | {"epoch": own["deepbasics"]["epochs"]}
        return own

    def group_checkpoint(self) -> dict:
        """The group's checkpoint from its jobs' last ones, to resume as a group: their shared loop state, the weights
        the group was built with (``_build``), each job's optimizer and scheduler state (stacked when loaded)."""
        saved = [job.resumed for job in self.jobs]
        schedules = [{"jobs": [c["lr_schedulers"][0] for c in saved]}] if saved[0]["lr_schedulers"] else []
        return {key: saved[0][key] for key in ("epoch", "global_step", "pytorch-lightning_version", "loops")} | {
            "state_dict": self.group.state_dict(),
            "lr_schedulers": schedules,
            "optimizer_states": [{"jobs": [c["optimizer_states"][0] for c in saved]}],
        }


class JobCheckpointIO(AtomicCheckpointIO):
    """The group's checkpoint written as that of the job whose directory it goes to. An epoch's checkpoints change
    together (``FileSet``, committed by ``LastCheckpoint``): a kill leaves every job at one epoch, so a resume stacks
    the same group (a group of other jobs sums in other orders, off by float32 rounding)."""

    def __init__(self, checkpoints: JobCheckpoints, journal: Path):
        super().__init__()
        self.checkpoints, files = checkpoints, FileSet(journal)
        self.write, self.remove_checkpoint, self.commit = files.write, files.remove, files.commit

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        super().save_checkpoint(self.checkpoints.job_checkpoint(checkpoint, path), path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return self.checkpoints.group_checkpoint()  # a resumed group: from all its jobs' checkpoints
