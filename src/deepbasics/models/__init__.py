"""The models: the tutorials' plain nets (``nets``), the LightningModules that train any net (``lightning_modules``),
their stacked form for sweeps (``stacked``) and a linear model's closed-form optimum (``optimum``)."""

from deepbasics.models.lightning_modules import BinaryClassifier, MulticlassClassifier, RegressionModule, TaskModule

__all__ = ["BinaryClassifier", "MulticlassClassifier", "RegressionModule", "TaskModule"]
