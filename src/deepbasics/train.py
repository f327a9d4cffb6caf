"""`deepbasics-train` (also `python -m deepbasics.train`): train one experiment, or sweep with `-m`."""

from deepbasics.app import hydra_app


def _train(cfg):
    from deepbasics.schema import validate_train_config

    # A mistake answers before torch loads (training.train checks the effective config again: it is also
    # called in-process, and a resumed run's config is the one stored in its checkpoint).
    if not cfg.get("resume"):
        validate_train_config(cfg)
    from deepbasics.training import train  # torch and Lightning load only once a run needs them

    return train(cfg)


main = hydra_app("train", _train)

if __name__ == "__main__":
    main()
