"""The console entry points: a Hydra app around a task, with one error policy: one line on stderr and exit 2 (a
mistake), 1 (a failed run) or 130/143 (Ctrl-C, SIGTERM); in a multirun a failed job is logged and the sweep goes on."""

from __future__ import annotations

import errno
import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from deepbasics.config.paths import CONF_DIR, check_checkpoint_path
from deepbasics.config.resolvers import register_resolvers
from deepbasics.config.run_dir import discard_unstarted
from deepbasics.config.settings import require_values
from deepbasics.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, Interrupted, RunFailed, exit_with, one_line

log = logging.getLogger(__name__)
STARTED = time.time()  # this command's start: files older than it are not this command's own
AGAIN = "nothing was trained or lost; run the command again (a sweep: the same command with resume=auto)"


def hydra_app(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    register_resolvers()

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
    def run(cfg: DictConfig) -> Any:
        return guarded(task, cfg)

    def main() -> Any:
        # Let Hydra's own errors reach us unformatted, so they can become one line.
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")
        try:
            return run()
        except (HydraException, OmegaConfBaseException, ConfigError) as err:  # ConfigError: a sweeper's
            exit_with(err)
        except OSError as err:  # Hydra making the run directory
            exit_with(cannot_write(err))
        except KeyboardInterrupt:  # Ctrl-C while Hydra starts, or between a sweep's jobs
            print(f"SIGINT: stopped before training; {AGAIN}", file=sys.stderr, flush=True)
            raise SystemExit(130) from None

    return main


def guarded(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """``task(cfg)`` under the error policy above (also what the vectorized launcher's jobs end with)."""
    try:
        return task(cfg)
    except Interrupted as err:
        print(str(err), file=sys.stderr, flush=True)
        raise SystemExit(err.code) from None  # also ends a sweep: Ctrl-C means stop
    except KeyboardInterrupt:  # Ctrl-C before training started (loading torch, the data): nothing to save
        if not in_multirun():
            _discard_unstarted(cfg)
        raise  # the entry point says so in one line (hydra_app), as for Ctrl-C while Hydra starts
    except (ConfigError, RunFailed, OSError) as err:  # OSError: a file of the run (a full disk, a read-only one)
        message = cannot_write(err) if isinstance(err, OSError) else one_line(err)
        if not in_multirun():
            if isinstance(err, ConfigError):
                _discard_unstarted(cfg)
            exit_with(message, EXIT_FAILED if isinstance(err, RunFailed) else EXIT_USAGE)
        log.error("job failed: %s", message)
        return _worst(cfg)
    except Exception:
        if not in_multirun():
            raise
        log.exception("job failed")
        return _worst(cfg)


def cannot_write(err: OSError) -> str:
    """What to do when outputs cannot be written: free space on a full disk, another directory otherwise."""
    where = f"cannot write outputs ({err.strerror}: {err.filename or 'the output directory'})"
    if err.errno == errno.ENOSPC:
        return f"{where}; free space on that disk, or pass paths.output_dir=<a directory on another disk>"
    return f"{where}; pass paths.output_dir=<a writable directory>"


def _discard_unstarted(cfg: DictConfig) -> None:
    """The directory made for this command's run, when it stopped before training (predict has none)."""
    if OmegaConf.select(cfg, "paths.run_dir"):
        discard_unstarted(cfg.paths.run_dir, cfg.paths.output_dir, STARTED)


def checkpoint_app(config_name: str, module: str, function: str) -> Callable[[], Any]:
    """An entry point whose task starts from ``ckpt_path``: the path is checked before torch loads."""

    def task(cfg: DictConfig) -> Any:
        require_values(cfg)
        cfg.ckpt_path = str(check_checkpoint_path(cfg.ckpt_path))  # a run directory stands for its last.ckpt
        return getattr(importlib.import_module(module), function)(cfg)

    return hydra_app(config_name, task)


def _worst(cfg: DictConfig) -> float:
    """What a failed job returns to its sweeper: the worst value, not NaN (which would end an Optuna sweep)."""
    return -math.inf if (cfg.get("monitor") or {}).get("mode") == "max" else math.inf


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
