"""Hydra's Optuna sweeper for Optuna >= 4, discovered by Hydra under the hydra_plugins namespace."""
