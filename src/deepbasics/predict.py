"""`deepbasics-predict ckpt_path=<.ckpt> 'inputs=[[2,2],[5,4]]'` (or inputs=<csv>; also
`python -m deepbasics.predict`): one line of JSON, {"predictions": [...]}."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepbasics.config import CONF_DIR, register_resolvers
from deepbasics.errors import ConfigError, exit_with

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    from deepbasics.inference import predict

    try:
        predict(cfg)
    except ConfigError as err:
        exit_with(err)


if __name__ == "__main__":
    main()
