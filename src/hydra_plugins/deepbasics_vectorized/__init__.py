"""A Hydra Launcher that trains a multirun's jobs as stacked models (deepbasics.run.group), discovered by
Hydra under the hydra_plugins namespace."""
