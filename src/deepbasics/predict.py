"""`deepbasics-predict ckpt_path=<.ckpt> 'inputs=[[2,2],[5,4]]'` (or inputs=<csv>; also
`python -m deepbasics.predict`): one line of JSON, {"predictions": [...]}."""

from deepbasics.app import hydra_app


def _predict(cfg):
    from deepbasics.checkpoints import check_checkpoint_path
    from deepbasics.schema import require_values

    require_values(cfg)
    check_checkpoint_path(cfg.ckpt_path)  # a wrong path answers before torch loads
    from deepbasics.prediction import predict

    return predict(cfg)


main = hydra_app("predict", _predict)

if __name__ == "__main__":
    main()
