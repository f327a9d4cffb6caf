"""``hydra/sweeper=grid`` (deepbasics' default): Hydra's basic sweeper, whose check that every job of a
batch composes before launching it composes each job's config from its files (about 90 ms a job here, paid
again by the launcher). Here that check goes through ``SweepConfigs``: the same configs, each set of
config-group choices composed once."""

from __future__ import annotations

from collections.abc import Sequence

from deepbasics.compat import basic_sweeper
from hydra_plugins.deepbasics_grid.configs import SweepConfigs


class GridSweeper(basic_sweeper()):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        # Before the first launch, Hydra's sweeper holds every batch: the sweep records its jobs, so that
        # a report after a kill lists those that never started.
        from pathlib import Path

        from deepbasics.config.sweeps import record_jobs

        record_jobs(Path(str(self.config.hydra.sweep.dir)), [job for jobs in self.overrides for job in jobs])
        # the vectorized launcher takes the configs composed here; for the others they are only a check
        checked = {} if not getattr(self.launcher, "takes_checked_configs", False) else self.launcher.checked_configs
        checked.clear()  # only this batch's
        configs = SweepConfigs(self.hydra_context.config_loader, self.config, checked)
        for overrides in batch:
            configs.check(list(overrides))
