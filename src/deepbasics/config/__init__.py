"""Configuration: where the configs live, their resolvers, a run's (or a sweep's) directory, the run's own
settings. Nothing here imports torch or Lightning: `--help` and config mistakes answer at once."""
