"""`deepbasics-predict ckpt_path=<.ckpt> 'inputs=[[2,2],[5,4]]'` (or inputs=<csv>; also
`python -m deepbasics.predict`): one line of JSON, {"predictions": [...]}."""

from deepbasics.app import checkpoint_app

main = checkpoint_app("predict", "deepbasics.prediction", "predict")

if __name__ == "__main__":
    main()
