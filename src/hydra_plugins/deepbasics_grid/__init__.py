"""Hydra's basic (grid) sweeper with a cheap check of every job's config (a plugin found under hydra_plugins)."""
