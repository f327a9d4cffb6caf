"""Hydra's basic (grid) sweeper with its check of every job's config made cheap, discovered by Hydra under
the hydra_plugins namespace."""
