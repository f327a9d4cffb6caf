"""`deepbasics-evaluate ckpt_path=<.ckpt>` (also `python -m deepbasics.evaluate`): a checkpoint's metrics
on its run's test split (train for runs without one), printed and written to outputs/evaluations/."""

from deepbasics.app import hydra_app


def _evaluate(cfg):
    from deepbasics.checkpoints import check_checkpoint_path
    from deepbasics.schema import require_values

    require_values(cfg)
    check_checkpoint_path(cfg.ckpt_path)  # a wrong path answers before torch loads
    from deepbasics.evaluation import evaluate

    return evaluate(cfg)


main = hydra_app("evaluate", _evaluate)

if __name__ == "__main__":
    main()
