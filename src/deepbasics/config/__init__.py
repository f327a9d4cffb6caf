"""Configuration: where the configs live, the resolvers they use, which directory a run (or a sweep) writes
into, and the run's own settings. Nothing here imports torch or Lightning: `--help` and config mistakes
answer at once."""
