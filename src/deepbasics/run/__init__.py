"""A run: the fit (``training``), its callbacks, checkpoints, resume and random state; evaluate and predict
on a checkpoint."""
