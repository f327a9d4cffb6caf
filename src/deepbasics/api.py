"""The Python API for notebooks: ``fit`` trains in this process, again and again (Hydra's global state lives only
around each composition), ``load_model`` loads a net; a mistake raises the command line's one line."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from deepbasics.config.paths import CONF_DIR
from deepbasics.config.resolvers import config_groups, register_resolvers
from deepbasics.config.run_dir import LAST, choose_run_dir, discard_unstarted, fresh_stem
from deepbasics.errors import ConfigError, one_line
from deepbasics.files import read_json


@dataclass(frozen=True)
class Result:
    """One finished run: its directory, metrics.json, trained plain net (eval mode) and last checkpoint (or None)."""

    run_dir: Path
    metrics: dict[str, Any]
    model: Any
    checkpoint: Path | None


def fit(experiment: str, overrides: Sequence[str] = (), output_dir: str | Path = "outputs") -> Result:
    """Train ``experiment`` with the ``overrides`` of a `deepbasics-train` command line, under ``output_dir``."""
    from deepbasics.run.training import train

    started = time.time()
    register_resolvers()
    composed = [f"experiment={experiment}", f"paths.output_dir={output_dir}", *overrides]
    try:  # the config `deepbasics-train experiment=<experiment> <overrides>` would run; Hydra's state cleared after
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="train"):
            cfg = compose("train", overrides=composed)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(one_line(err)) from None
    chosen = choose_run_dir(str(output_dir), cfg.name, cfg.resume, fresh_stem(), composed, config_groups())
    cfg.paths.run_dir = str(Path(chosen).resolve())
    run_dir, command = Path(cfg.paths.run_dir), [f"experiment={experiment}", *overrides]
    if not cfg.resume:  # what the command line keeps of a run's config, so tools read both alike
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(command), run_dir / ".hydra" / "overrides.yaml")
    # Lightning's start-up notes, which the command line keeps in the run's log file: not in a notebook
    levels = {logger: logger.level for logger in map(logging.getLogger, ("lightning.pytorch", "lightning.fabric"))}
    try:
        for logger in levels:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        train(cfg, overrides=command)
    except ConfigError:  # refused before it trained: no "failed" run left behind, as on the command line
        discard_unstarted(run_dir, cfg.paths.output_dir, started)
        raise
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)
    last = run_dir / LAST
    return Result(run_dir, read_json(run_dir / "metrics.json"), load_model(run_dir), last if last.is_file() else None)


def load_model(path: str | Path):
    """The trained plain net (eval mode) of a run directory, a .ckpt, or a model.pt in its run directory."""
    import torch

    from deepbasics.run.checkpoints import read_checkpoint
    from deepbasics.run.predict import net_of

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / LAST if (path / LAST).is_file() else path / "model.pt"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; pass a run directory, a .ckpt or a model.pt")
    if path.suffix == ".ckpt":
        return net_of(read_checkpoint(path))
    weights = torch.load(path, map_location="cpu", weights_only=True)
    if not (path.parent / LAST).is_file():
        raise ConfigError(f"{path} alone does not say which net it holds; pass a run directory with {LAST} or a .ckpt")
    # the run's checkpoint says which net, and any standardization of its inputs
    return net_of(read_checkpoint(path.parent / LAST) | {"state_dict": {f"net.{k}": v for k, v in weights.items()}})
