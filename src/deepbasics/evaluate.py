"""`deepbasics-evaluate ckpt_path=<.ckpt>` (also `python -m deepbasics.evaluate`): a checkpoint's metrics
on its run's test split (train for runs without one), printed and written to outputs/evaluations/."""

from deepbasics.app import checkpoint_app

main = checkpoint_app("evaluate", "deepbasics.evaluation", "evaluate")

if __name__ == "__main__":
    main()
