"""The run's own settings (conf/train.yaml's top-level keys), checked before torch loads; everything else is
checked by what it configures (a DataModule's, a net's or an optimizer's own arguments, Lightning's)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepbasics.errors import ConfigError

SPLITS = ("train", "val", "test")  # data splits, and the metric stages named after them
# key -> (lowest, highest or None, what it counts)
COUNTS = {
    "seed": (0, 2**32 - 1, ""),  # numpy's and Lightning's seed range
    "epochs": (1, None, " (epochs to train)"),
    "log_every": (1, None, " (epochs between logged points)"),
    "val_every": (1, None, " (epochs between validations)"),
    "threads": (1, None, " (CPU threads)"),
}
CHOICES = {"progress": ("auto", "bar", "lines"), "monitor.mode": ("min", "max"), "dry_run": (False, True)}
# Trainer arguments the run sets from its own keys: set under trainer. they would be overridden
SET_BY_THE_RUN = {
    "max_epochs": "epochs=<epochs>",
    "max_steps": "epochs=<epochs>",
    "check_val_every_n_epoch": "val_every=<epochs>",
    "log_every_n_steps": "log_every=<epochs>",
    "enable_progress_bar": "progress=bar or progress=lines",
    "callbacks": "callbacks=<group> or callbacks.<name>.<option>=...",
    "logger": "logger=<group>",
    "default_root_dir": "paths.output_dir=<dir>",
    "plugins": "nothing (checkpoints are written by the run)",
}


def number(text: Any) -> float | None:
    """A value written as a number (a swept setting, a CSV cell), or None."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def require_values(cfg: DictConfig) -> None:
    """Keys left as ??? must come from the command line."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set: pass {missing[0]}=<value> on the command line")


def check_settings(cfg: DictConfig) -> None:
    """The values a run needs are given; its own counts and choices are in range."""
    require_values(cfg)
    for key, (low, high, what) in COUNTS.items():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            above = "a positive integer" if low == 1 else f"an integer of {low} or more"
            raise ConfigError(f"{key}={value!r} must be {f'an integer from {low} to {high}' if high else above}{what}")
    for key, options in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if not any(value is option or (isinstance(option, str) and value == option) for option in options):
            words = [str(o).lower() for o in options]
            raise ConfigError(f"{key}={value!r}: use {', '.join(words[:-1])} or {words[-1]}")
    for key in cfg.get("trainer") or ():
        if key in SET_BY_THE_RUN:
            raise ConfigError(f"trainer.{key} is set by the run itself; pass {SET_BY_THE_RUN[key]} instead")
