"""What a run leaves to read: metrics.json and the end-of-run table (``metrics``), figures, the sweep report
(``sweep``). Light on purpose: Hydra loads the sweep report callback for every run."""
