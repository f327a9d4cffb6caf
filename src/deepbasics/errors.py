"""How failures reach the user: one line on stderr and an exit status, never a traceback for a mistake."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import sys
from typing import NoReturn

EXIT_FAILED = 1  # the run itself failed (the loss diverged)
EXIT_USAGE = 2  # bad config or input


class ConfigError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class RunFailed(RuntimeError):
    """Training could not go on (the loss became NaN or infinite) at ``epoch``."""

    def __init__(self, message: str, epoch: int = 0):  # defaults: unpickled (a forked worker's), then its fields
        super().__init__(message)
        self.epoch = epoch


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped training after a checkpoint; ``code`` is the conventional exit status."""

    def __init__(self, message: str, code: int = 130, epoch: int = 0):  # defaults: as RunFailed's
        super().__init__(message)
        self.code, self.epoch = code, epoch


def exit_with(err: Exception | str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr and exit: SystemExit passes through Hydra's and OmegaConf's error wrapping."""
    print(f"error: {err if isinstance(err, str) else one_line(err)}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def one_line(err: BaseException) -> str:
    """A Hydra or OmegaConf error (several lines, a cause, a search path) as one readable line."""
    override = getattr(err, "override", None)  # Hydra's OverrideParseException
    if override is not None:
        line = f"cannot parse override '{override}': {str(err).splitlines()[0]}"
        key, sep, value = str(override).partition("=")
        if sep and "LexerNoViableAlt" in line and '"' not in value:
            # Hydra's grammar takes spaces, letters beyond ASCII and ;[]{}(), unquoted only in part.
            line += f"; quote the value for Hydra inside the shell's quotes: '{key}=\"{value}\"'"
        return line
    key = re.search(r"Could not override '([^']+)'", str(err))
    if key and "not in struct" in str(err.__cause__):
        name = key.group(1)
        return f"unknown config key '{name}': check the spelling (--help shows the config), or +{name}=... adds a key"
    noise = ("Config search path", "full_key:", "object_type=", "reference_type=")  # where the message ends
    stripped = (line.strip() for line in str(err).splitlines())
    lines = [line for line in itertools.takewhile(lambda line: not line.startswith(noise), stripped) if line]
    options = next((i for i, line in enumerate(lines) if line.startswith("Available options in")), None)
    if options is not None:  # Hydra lists a group's options one per line
        return f"{' '.join(lines[:options])}; {lines[options]} {', '.join(lines[options + 1 :])}"
    return " ".join(lines) or type(err).__name__


def command_as_typed(script: str = "deepbasics-train") -> str:
    """``script`` as the user started it, so that a command printed for them runs as printed: the path they
    typed, the bare name where PATH finds that file, or ``python -m deepbasics.<module>``; from Python, the name."""
    started = sys.argv[0] if sys.argv else ""
    name, module = os.path.basename(started), script.removeprefix("deepbasics-")
    if name == f"{module}.py" and os.path.basename(os.path.dirname(started)) == "deepbasics":
        python = os.path.basename(sys.executable)
        return f"{shlex.quote(python if _on_path(python, sys.executable) else sys.executable)} -m deepbasics.{module}"
    if name != script:
        return script
    return name if os.sep not in started or _on_path(name, started) else shlex.quote(started)


def _on_path(name: str, path: str) -> bool:
    """Whether the shell's PATH finds ``name`` as the file ``path``."""
    found = shutil.which(name)
    return found is not None and os.path.realpath(found) == os.path.realpath(path)
