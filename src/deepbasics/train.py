"""`deepbasics-train` (also `python -m deepbasics.train`): train one experiment, or sweep with `-m`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepbasics.config import CONF_DIR, register_resolvers
from deepbasics.errors import ConfigError, exit_with

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    from deepbasics.training import train  # torch and Lightning load only once a run needs them

    try:
        return train(cfg)
    except ConfigError as err:
        exit_with(err)


if __name__ == "__main__":
    main()
