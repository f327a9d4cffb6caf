"""Configuration: where the configs live, the resolvers they use, which directory a run writes into and the
typed schema. Nothing here imports torch or Lightning: `--help` and config mistakes answer at once."""
