"""Where the configs live and the resolvers they use. Imports nothing heavy: `--help` and config errors
must answer before torch or Lightning would even load."""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import OmegaConf

_SOURCE_CONF = Path(__file__).resolve().parents[2] / "conf"
# A source checkout (editable install) reads conf/ at the top; a wheel carries a copy inside the package.
CONF_DIR = str(_SOURCE_CONF if _SOURCE_CONF.is_dir() else Path(__file__).resolve().parent / "conf")


def register_resolvers() -> None:
    # Cached: every interpolation in one process sees the same token, so a run has exactly one directory,
    # and two runs started in the same second still get two.
    if not OmegaConf.has_resolver("uniq"):
        OmegaConf.register_new_resolver("uniq", lambda: secrets.token_hex(3), use_cache=True)
