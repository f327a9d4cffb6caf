"""How many jobs of a stacked group fit in the memory the process may use: what one job adds, and what is left."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import psutil
import torch

# The stack of a group's threads (a log writer per job and logger), not the system's 8 MiB of address space each
WRITER_STACK = 1 << 20
# (limit, usage) files of the process's cgroup, v2 then v1, as a container sees its own at /sys/fs/cgroup
CGROUPS = (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"))


def room(device: torch.device) -> tuple[int, str]:
    """Bytes this process may still take, and which limit says so: free memory, ``RLIMIT_AS`` (the address space, of
    which torch's libraries take their share), a cgroup's limit, and on a GPU its free memory."""
    limits = {"free memory": psutil.virtual_memory().available}
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        limits["RLIMIT_AS (ulimit -v)"] = soft - psutil.Process().memory_info().vms
    for limit, usage in CGROUPS:
        with contextlib.suppress(OSError, ValueError):  # no such cgroup, or "max" (no limit)
            used = int(Path("/sys/fs/cgroup", usage).read_text())
            limits["the cgroup's memory limit"] = int(Path("/sys/fs/cgroup", limit).read_text()) - used
            break
    if device.type == "cuda":
        limits[f"free memory on {device}"] = torch.cuda.mem_get_info(device)[0]
    return min((bytes_left, name) for name, bytes_left in limits.items())


def job_bytes(module, x: torch.Tensor, y: torch.Tensor) -> int:
    """What one more job adds to a group at its peak, a training step on its rows: the tensors autograd keeps for
    the backward, twice (their gradients come and go beside them), and its parameters four times (with their
    gradients and up to two optimizer states)."""
    saved = []

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.random.fork_rng(), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        module.loss_fn(module.net(x), y)  # dropout draws in here leave the run's random state as it was
    return 2 * sum(saved) + 4 * sum(p.numel() * p.element_size() for p in module.parameters())
