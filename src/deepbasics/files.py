"""Files of a run: written so that a crash cannot half-write them (alone or as a set); one writer per run directory."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from deepbasics.errors import ConfigError

TEMPORARY = ".tmp-"  # the prefix of atomic_write's temporary files
_held: dict[Path, int] = {}  # run directory -> the open descriptor holding its lock


def read_json(path: str | Path) -> dict:
    """A JSON record as a dict; {} when missing or not whole (a copy cut short, a full disk): not a finished run."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` fills a temporary file, fsynced and renamed over ``path``: readers and crashes see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMPORARY}{secrets.token_hex(4)}{path.suffix}")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:  # a write() on a full disk names no file
            err.filename = str(path)
        raise


class FileSet:
    """Files that change together (a stacked epoch's checkpoints): written beside their targets, then renamed over
    them after a journal of the renames and removals is on disk, which ``roll_forward`` finishes after a kill."""

    PENDING = ".pending"

    def __init__(self, journal: Path):
        self.journal, self.renames, self.removals = Path(journal), [], []

    def write(self, path: str | Path, write: Callable[[BinaryIO], None]) -> None:
        pending = Path(path).with_name(f".{Path(path).name}{self.PENDING}")
        atomic_write(pending, write)
        self.renames.append((str(pending), str(path)))

    def remove(self, path: str | Path) -> None:
        self.removals.append(str(path))

    def commit(self) -> None:
        if self.renames or self.removals:
            text = json.dumps({"renames": self.renames, "removals": self.removals}).encode()
            atomic_write(self.journal, lambda f: f.write(text))
            roll_forward(self.journal)
            self.renames, self.removals = [], []


def roll_forward(journal: Path) -> None:
    """Finish the renames and removals a ``FileSet``'s journal lists (again, harmlessly, if they are done)."""
    done = json.loads(Path(journal).read_text())
    for pending, path in done["renames"]:
        if os.path.exists(pending):
            os.replace(pending, path)
    for path in done["removals"]:
        if os.path.lexists(path) and path not in {target for _, target in done["renames"]}:
            os.remove(path)
    os.remove(journal)


def lock_run_dir(run_dir: str | Path, clean: bool = True) -> None:
    """Make this process the one writer of ``run_dir`` (a flock, freed when it dies); DDP ranks share rank 0's.
    ``clean``: remove killed writers' temporary files (not a sweep's: its jobs have writers of their own)."""
    run_dir = Path(run_dir).resolve()
    rank = next((int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if k in os.environ), 0)
    if run_dir in _held or rank != 0:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(
            f"{run_dir} is in use by {holder}; one run writes to a directory at a time: wait for it to end"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%F %T')}\n".encode())
    _held[run_dir] = fd
    if clean:
        for path in run_dir.rglob(f"{TEMPORARY}*"):
            path.unlink(missing_ok=True)


def unlock_run_dir(run_dir: str | Path) -> None:
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock
