"""A resumed run's effective config: the one stored in its checkpoint, plus this command line's values
(epochs=3000 extends a run); group changes (another model or data) are refused."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from deepbasics.config.resolvers import config_groups
from deepbasics.config.run_dir import check_same_experiment, refuse_group_changes
from deepbasics.run.checkpoints import read_checkpoint


def resumed_config(cfg: DictConfig, ckpt_path: Path, overrides: list[str] | None = None) -> tuple[DictConfig, dict]:
    """The config the checkpoint was trained with, plus the value ``overrides`` of the command line or the
    API call (epochs=3000 extends a run), and the checkpoint itself."""
    overrides = list(overrides or ())
    checkpoint = read_checkpoint(ckpt_path, key="resume")
    resumed = OmegaConf.create(checkpoint["deepbasics"]["config"])
    check_same_experiment(cfg.resume, resumed.name, overrides)
    for key, value in _values(overrides, Path(ckpt_path).parent.parent):
        OmegaConf.update(resumed, key, value, merge=False)
    resumed.resume = cfg.resume
    resumed.paths.run_dir = cfg.paths.run_dir
    return resumed, checkpoint


def _values(overrides: list[str], run_dir: Path) -> list[tuple[str, object]]:
    """The plain ``key=value`` overrides; a config group change is refused (the checkpoint's run directory
    ``run_dir`` says which groups it has)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = config_groups()
    refuse_group_changes(overrides, groups, run_dir)
    values = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.split("/")[0] not in groups | {"resume"} and not override.is_hydra_override():
            values.append((key, override.value()))
    return values
