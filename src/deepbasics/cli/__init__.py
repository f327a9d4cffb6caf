"""The console scripts (``commands``) and the Hydra app around them with one error policy (``app``)."""
