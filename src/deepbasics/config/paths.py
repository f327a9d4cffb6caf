"""Where the configs live, and the checks on a checkpoint path that need no torch (a wrong path answers
before torch loads)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from deepbasics.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parents[1]
_SOURCE_CONF = _PACKAGE.parents[1] / "conf"
# A source checkout (editable install) reads conf/ at the top; a wheel carries a copy inside the package.
CONF_DIR = str(_SOURCE_CONF if _SOURCE_CONF.is_dir() else _PACKAGE / "conf")
LAST = Path("checkpoints") / "last.ckpt"  # a run's latest checkpoint, in its directory


def check_checkpoint_path(path: str | Path, key: str = "ckpt_path") -> Path:
    """The checkpoint file ``path`` names: a .ckpt, or a run directory's checkpoints/last.ckpt."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / LAST).is_file():
            raise ConfigError(f"{key}={path} is a directory without {LAST}; pass a run directory or a .ckpt")
        path = path / LAST
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file; pass a .ckpt from a run's checkpoints/ directory")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one lost its central directory
        raise ConfigError(f"{key}={path} is not a readable checkpoint (not a torch archive, or a truncated one)")
    return path
