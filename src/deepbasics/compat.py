"""All that deepbasics needs from Lightning or Hydra beyond their public API, each piece with why and the version
checked: tests/test_compat.py fails loudly when one changes, and scripts/private_names.py keeps them here."""

from __future__ import annotations

import copy
from typing import Any


def basic_sweeper() -> type:
    """Hydra 1.3.8: its grid sweeper, which has no public import path (hydra_plugins/deepbasics_grid derives from
    it). Looked up when asked: a subclass must derive from the class of Hydra's own plugin scan."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper


# Lightning 2.6.6: the loop state inside a checkpoint ("loops"). Earlier releases of deepbasics took several
# full-batch steps per Lightning epoch; ``loops_at_epoch_end`` rewrites their state as Lightning keeps it now.
FIT_LOOP = "fit_loop"
EPOCHS = "epoch_progress"
BATCHES = "epoch_loop.batch_progress"
STEPS = "epoch_loop.automatic_optimization.optim_progress"
MANUAL_STEPS = "epoch_loop.manual_optimization.optim_step_progress"
SCHEDULER_STEPS = "epoch_loop.scheduler_progress"
BATCHES_THAT_STEPPED = "epoch_loop.state_dict"


def loops_at_epoch_end(loops: dict[str, Any], epochs: int) -> dict[str, Any]:
    """``loops`` as Lightning saves them at the end of epoch ``epochs`` (not yet counted), one step an epoch."""

    def counts(total: int, current: int, *names: str) -> dict:
        return {"total": dict.fromkeys(names, total), "current": dict.fromkeys(names, current)}

    loops = copy.deepcopy(loops)
    fit = loops[FIT_LOOP]
    fit[EPOCHS] = counts(epochs, epochs, "ready", "started", "processed", "completed")
    for part in ("total", "current"):
        fit[EPOCHS][part]["completed"] = epochs - 1
    fit[BATCHES] = counts(epochs, 1, "ready", "started", "processed", "completed") | {"is_last_batch": True}
    step, zero_grad = counts(epochs, 1, "ready", "completed"), counts(epochs, 1, "ready", "started", "completed")
    fit[STEPS] = {"optimizer": {"step": step, "zero_grad": zero_grad}}
    fit[MANUAL_STEPS] = counts(0, 0, "ready", "completed")
    scheduled = max(epochs - 1, 0) if fit.get(SCHEDULER_STEPS, {}).get("total", {}).get("completed") else 0
    fit[SCHEDULER_STEPS] = counts(scheduled, 0, "ready", "completed")
    fit[BATCHES_THAT_STEPPED] = {"_batches_that_stepped": epochs}
    return loops
