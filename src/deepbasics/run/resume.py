"""A resumed run's effective config: the one stored in its checkpoint, plus this command line's values
(epochs=3000 extends a run); group changes (another model or data) are refused."""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from deepbasics.config.resolvers import config_groups
from deepbasics.config.run_dir import check_same_experiment, refuse_group_changes
from deepbasics.run.checkpoints import read_checkpoint


def resumed_config(cfg: DictConfig, ckpt_path: Path, overrides: list[str] | None = None) -> tuple[DictConfig, dict]:
    """The checkpoint's config plus the plain ``key=value`` overrides (group changes refused); and the checkpoint."""
    overrides = list(overrides or ())
    checkpoint = read_checkpoint(ckpt_path, key="resume")
    resumed = OmegaConf.create(checkpoint["deepbasics"]["config"])
    check_same_experiment(cfg.resume, resumed.name, overrides)
    groups = config_groups()
    refuse_group_changes(overrides, groups, Path(ckpt_path).parent.parent)  # the groups of the checkpoint's run
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.split("/")[0] not in groups | {"resume"} and not override.is_hydra_override():
            OmegaConf.update(resumed, key, override.value(), merge=False)
    resumed.resume = cfg.resume
    resumed.paths.run_dir = cfg.paths.run_dir
    return resumed, checkpoint
