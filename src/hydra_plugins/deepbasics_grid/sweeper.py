"""``hydra/sweeper=grid`` (deepbasics' default): Hydra's basic sweeper, its check that every job composes done by
``SweepConfigs`` (each set of config-group choices composed once, not about 90 ms a job)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from deepbasics.compat import basic_sweeper
from deepbasics.config.sweep_dir import planned, record_jobs
from hydra_plugins.deepbasics_grid.configs import SweepConfigs


def dry_run(sweeper, jobs: list[list[str]]) -> None:
    """``dry_run=true``: the jobs the sweep (or its resume) would launch, their states and stacked groups; exit 0."""
    config = sweeper.config
    sweep = Path(str(config.hydra.sweep.dir))
    resuming = bool(config.get("resume"))
    kind = f"continues {sweep}" if resuming else f"would start {sweep}"
    print(f"dry run: this command {kind} with {len(jobs)} jobs; nothing is trained", flush=True)
    loader = SweepConfigs(sweeper.hydra_context.config_loader, config)
    for number, overrides in enumerate(jobs):
        job = loader.load(list(overrides))
        with open_dict(job):
            job.hydra.job.num = number
        name = str(job.hydra.sweep.subdir)
        print(f"#{number} {name}: {planned(sweep / name, resuming)}", flush=True)
    plan = getattr(sweeper.launcher, "plan", None)
    if plan is not None:  # the vectorized launcher
        _, groups, solo = plan(jobs, 0)
        for members in groups:
            print(f"stacked: {', '.join(f'#{i}' for i in members)}", flush=True)
        for number, why in sorted(solo.items()):
            print(f"#{number} on its own: {why}", flush=True)
    raise SystemExit(0)


class GridSweeper(basic_sweeper()):
    def sweep(self, arguments: list[str]):
        if self.config.get("dry_run"):  # before Hydra's sweeper makes the sweep directory
            params = [f"{key}={value}" for key, value in (self.params or {}).items()]
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            dry_run(self, self.split_arguments(parser.parse_overrides([*params, *arguments]), None)[0])
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        # every batch is known before the first launch: recorded, a report after a kill lists the jobs never started
        record_jobs(Path(str(self.config.hydra.sweep.dir)), [job for batch in self.overrides for job in batch])
        configs = SweepConfigs(self.hydra_context.config_loader, self.config)
        checked = {tuple(overrides): configs.load(list(overrides)) for overrides in batch}  # errors surface here
        if hasattr(self.launcher, "checked_configs"):  # the vectorized launcher takes them; for others, only a check
            self.launcher.checked_configs = checked
