"""A Hydra launcher that trains a multirun's jobs as stacked models (a plugin found under hydra_plugins)."""
