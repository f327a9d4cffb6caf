"""Sweep configs composed once per set of config-group choices (the grid sweeper's and the vectorized launcher's)."""

from __future__ import annotations

import copy

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class SweepConfigs:
    """Each job's config exactly as Hydra's ``load_sweep_config`` makes it, composed once per config-group choices."""

    def __init__(self, loader, master: DictConfig) -> None:
        self.loader, self.master, self.parser = loader, master, OverridesParser.create()
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        # groups are told from values by the primary search path: with hydra.searchpath, Hydra composes every job
        self.exact = bool(OmegaConf.select(master, "hydra.searchpath"))

    def load(self, overrides: list[str]) -> DictConfig:
        if self.exact:
            return self.loader.load_sweep_config(self.master, overrides)
        parsed = self.parser.parse_overrides(overrides)
        repo = self.loader.repository
        values = [o for o in parsed if isinstance(o.value(), dict) or not repo.group_exists(o.key_or_group)]
        choices = tuple(o.input_line for o in parsed if o not in values)
        if choices not in self.composed:
            self.composed[choices] = self.loader.load_sweep_config(self.master, list(choices))
        cfg = copy.deepcopy(self.composed[choices])
        if not all(_applied(o, cfg) for o in values):  # anything else: Hydra composes it, and says what is wrong
            return self.loader.load_sweep_config(self.master, overrides)
        hydra, job = cfg.hydra, cfg.hydra.job.config.override_dirname
        task = [o for o in parsed if not o.is_hydra_override()]
        hydra.overrides.hydra = [*self.master.hydra.overrides.hydra, *(o.input_line for o in parsed if o not in task)]
        hydra.overrides.task = [o.input_line for o in task]
        # Hydra's override_dirname: the task overrides but the excluded keys, sorted, '=' as kv_sep
        lines = sorted(o.input_line for o in task if o.key_or_group not in job.exclude_keys)
        hydra.job.override_dirname = job.item_sep.join(lines).replace("=", job.kv_sep)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg


def _applied(override, cfg: DictConfig) -> bool:
    """A plain ``key=value`` applied as Hydra applies it; False, nothing applied, for other forms or a missing key."""
    if override.package is not None or override.is_delete() or override.is_add() or override.is_force_add():
        return False
    try:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    except OmegaConfBaseException:
        return False
    return True
