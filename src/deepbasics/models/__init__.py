"""The models: the tutorials' plain nets (``nets``), the LightningModules that train them
(``lightning_modules``) and the closed-form optimum a linear model class can reach (``optimum``)."""
