"""`deepbasics-evaluate ckpt_path=<.ckpt>` (also `python -m deepbasics.evaluate`): a checkpoint's metrics
on its run's test split (train for runs without one), printed and written to outputs/evaluations/."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepbasics.config import CONF_DIR, register_resolvers
from deepbasics.errors import ConfigError, exit_with

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from deepbasics.inference import evaluate

    try:
        evaluate(cfg)
    except ConfigError as err:
        exit_with(err)


if __name__ == "__main__":
    main()
