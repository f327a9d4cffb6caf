"""How many jobs of a stacked group fit in the memory the process may use: what one job adds, and what is left."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import psutil
import torch

WRITER_STACK = 1 << 20  # a group's threads (a log writer per job and logger): not 8 MiB of address space each
SHARED_BY = 1  # processes training groups at once (forked from one, each with this value): each takes its share


def room(gpu: bool) -> tuple[int, str]:
    """Bytes this process may still take, and which limit says so: free memory, ``RLIMIT_AS`` (the address space, of
    which torch's libraries take their share), a cgroup's limit, and ``gpu``: the GPU's free memory; of the shared
    ones, its share while ``SHARED_BY`` processes train groups."""
    limits = {"free memory": psutil.virtual_memory().available // SHARED_BY}
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        limits["RLIMIT_AS (ulimit -v)"] = soft - psutil.Process().memory_info().vms
    with contextlib.suppress(OSError, ValueError, KeyError):  # a container's cgroup v2 ("max": no limit)
        cgroup = Path("/sys/fs/cgroup")
        stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
        used = int((cgroup / "memory.current").read_text()) - int(stat["inactive_file"])  # less the cache it reclaims
        limits["the cgroup's memory.max"] = (int((cgroup / "memory.max").read_text()) - used) // SHARED_BY
    if gpu and torch.cuda.is_available():  # the device Lightning picks for trainer=gpu or accelerator=auto
        limits["free memory on the GPU"] = torch.cuda.mem_get_info()[0] // SHARED_BY
    return min((bytes_left, name) for name, bytes_left in limits.items())


def job_bytes(module, x: torch.Tensor, y: torch.Tensor) -> int:
    """What one more job adds to a group at its peak, a training step: the tensors autograd keeps for the backward,
    twice (their gradients come beside them), and its parameters four times (gradients, two optimizer states)."""
    saved = []

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        module.loss_fn(module.net(x), y)  # dropout draws in here leave the run's random state as it was
    return 2 * sum(saved) + 4 * sum(p.numel() * p.element_size() for p in module.parameters())
