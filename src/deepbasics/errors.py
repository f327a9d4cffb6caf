"""The one exception type a user's mistake turns into, and the one way it reaches the user."""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_USAGE = 2


class ConfigError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""


def exit_with(err: Exception) -> NoReturn:
    """One line on stderr and exit status 2. SystemExit, unlike an Exception, passes through Hydra's and
    OmegaConf's error wrapping, so the user sees our line instead of a traceback."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)
