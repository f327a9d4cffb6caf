"""All that deepbasics needs from Lightning or Hydra beyond their public API, each piece with why and the version
checked: tests/test_compat.py fails loudly when one changes, and scripts/private_names.py keeps them here."""

from __future__ import annotations


def basic_sweeper() -> type:
    """Hydra 1.3.8: its grid sweeper, which has no public import path (hydra_plugins/deepbasics_grid derives from
    it). Looked up when asked: a subclass must derive from the class of Hydra's own plugin scan."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper
