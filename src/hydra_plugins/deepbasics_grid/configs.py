"""Sweep configs composed once per set of config-group choices (shared by the grid sweeper and the
vectorized launcher)."""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf


class SweepConfigs:
    """Each job's config exactly as Hydra's ``load_sweep_config`` makes it, with the composition (config
    files, defaults lists: about 90 ms a job here) done once per set of config-group choices. Jobs differing
    only in values (model.optimizer.lr=0.1 seed=3) copy that composition and get their values the way Hydra
    applies them after composing, with the override lists and override_dirname Hydra records."""

    def __init__(self, loader, master: DictConfig, checked: dict | None = None) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader, self.master, self.parser = loader, master, OverridesParser.create()
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        # configs a sweeper composed to check this batch, for the launcher that launches it: each taken once
        self.checked = checked if checked is not None else {}
        # Config groups are told from values through the primary search path; with extra search paths
        # (hydra.searchpath) every job is composed by Hydra itself.
        self.exact = bool(OmegaConf.select(master, "hydra.searchpath"))

    def check(self, overrides: list[str]) -> None:
        """Compose the job's config: errors surface here, before anything is launched; kept in ``checked``
        for the launcher, which takes it (``load``)."""
        self.checked[tuple(overrides)] = self.load(overrides)

    def load(self, overrides: list[str]) -> DictConfig:
        kept = self.checked.pop(tuple(overrides), None)
        if kept is not None:
            return kept
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
        hydra.overrides.hydra = [
            *self.master.hydra.overrides.hydra,
            *(o.input_line for o in parsed if o.is_hydra_override()),
        ]
        task = [o for o in parsed if not o.is_hydra_override()]
        hydra.overrides.task = [o.input_line for o in task]
        # Hydra's override_dirname: the task overrides but the excluded keys, sorted, '=' as kv_sep
        lines = sorted(o.input_line for o in task if o.key_or_group not in job.exclude_keys)
        hydra.job.override_dirname = job.item_sep.join(lines).replace("=", job.kv_sep)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg


def _applied(override, cfg: DictConfig) -> bool:
    """A plain value override (``key=value``) applied to a composed config as Hydra applies it; False, with
    nothing applied, for any other form (``+``, ``++``, ``~``, a package) or a key the config lacks: Hydra
    then composes that job itself."""
    from omegaconf.errors import OmegaConfBaseException

    if override.package is not None or override.is_delete() or override.is_add() or override.is_force_add():
        return False
    try:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    except OmegaConfBaseException:
        return False
    return True
