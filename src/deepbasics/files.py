"""Files of a run: written so that a crash cannot half-write them, readable as the user's umask says, and
one writer per run directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from deepbasics.errors import ConfigError

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # run directory -> the open descriptor holding its lock


def file_mode() -> int:
    """The mode a plain open() would give a new file under the current umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports the umask without changing it; setting it to read it would open a window in which
    # other threads (TensorBoard's, MLflow's writers) create world-writable files.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)  # elsewhere: read it by setting it, briefly to the safest value
    os.umask(mask)
    return mask


TEMPORARY = ".tmp-"  # the prefix of atomic_write's temporary files


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` fills a temporary file beside ``path``; it is fsynced and renamed over ``path``, so a
    reader (or a crash at any moment) sees either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY, suffix=path.suffix)
    try:
        # mkstemp creates 0600 and the rename keeps that mode: give the file what open() would have.
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class FileSet:
    """Files that change together (every job's checkpoints of one stacked step): each is written beside
    its target and fsynced, and all are renamed over their targets only when every one is there, after a
    journal of the renames (and of the files to remove) is on disk. A kill at any moment leaves the old set
    or, once the journal exists, the new one: ``roll_forward`` finishes what the journal lists."""

    PENDING = ".pending"

    def __init__(self, journal: Path):
        self.journal = Path(journal)
        self.renames: list[tuple[str, str]] = []
        self.removals: list[str] = []

    def write(self, path: str | Path, write: Callable[[BinaryIO], None]) -> None:
        path = Path(path)
        pending = path.with_name(f".{path.name}{self.PENDING}")
        atomic_write(pending, write)
        self.renames.append((str(pending), str(path)))

    def remove(self, path: str | Path) -> None:
        self.removals.append(str(path))

    def commit(self) -> None:
        if not self.renames and not self.removals:
            return
        import json

        text = json.dumps({"renames": self.renames, "removals": self.removals}).encode()
        atomic_write(self.journal, lambda f: f.write(text))
        roll_forward(self.journal)
        self.renames, self.removals = [], []


def roll_forward(journal: Path) -> None:
    """Finish the renames and removals a ``FileSet``'s journal lists (again, harmlessly, if they are done)."""
    import json

    done = json.loads(Path(journal).read_text())
    for pending, path in done["renames"]:
        if os.path.exists(pending):
            os.replace(pending, path)
    for path in done["removals"]:
        if os.path.lexists(path) and not any(path == target for _, target in done["renames"]):
            os.remove(path)
    os.remove(journal)


def _rank() -> int:
    """This process's global rank from the launcher's environment (torchrun, Lightning's DDP launcher,
    SLURM), read the way Lightning reads it; 0 outside distributed runs."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def lock_run_dir(run_dir: str | Path) -> None:
    """Make this process the one writer of ``run_dir`` until ``unlock_run_dir`` or exit: another process
    gets a ConfigError naming the holder. The kernel's flock is released when its holder dies, however it
    dies, so a lock left by a killed run is simply taken. DDP ranks other than 0 share rank 0's lock."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held or _rank() != 0:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(
            f"{run_dir} is in use by {holder}; one run writes to a directory at a time: wait for it to end"
        ) from None
    os.ftruncate(fd, 0)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
    _held[run_dir] = fd


def remove_dead_writes(run_dir: str | Path) -> None:
    """Remove the temporary files of atomic writes that a killed process left in ``run_dir`` (a SIGKILL
    runs no cleanup): once this process holds the directory, no other writes there, so any is dead."""
    run_dir = Path(run_dir).resolve()
    if run_dir not in _held:
        return
    for path in run_dir.rglob(f"{TEMPORARY}*"):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold an exclusive flock on ``path`` (made if need be) for the block, waiting for another holder:
    for a short piece of work one process at a time (unlike ``lock_run_dir``, which refuses a second)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def unlock_run_dir(run_dir: str | Path) -> None:
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock
