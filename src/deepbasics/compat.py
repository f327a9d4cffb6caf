"""What deepbasics needs from Lightning or Hydra beyond their public API, all of it in this one module, each
piece with why and the version it was checked against. tests/test_compat.py fails loudly when one of them
changes, and scripts/private_names.py (run by the tests) finds every private name of Lightning or Hydra used
in src/: this module holds them all."""

from __future__ import annotations

import copy
from typing import Any


def basic_sweeper() -> type:
    """Hydra 1.3.8: Hydra's own grid sweeper (hydra/sweeper=basic), which has no public import path; the
    project's grid sweeper (hydra_plugins/deepbasics_grid) is it with a cheaper check of every job's config.
    Looked up when asked: Hydra's plugin scan executes its plugin modules again, and a subclass must derive
    from the class of that execution."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper


# Lightning 2.6.6: the loop state inside a checkpoint ("loops"), as Lightning's fit loop saves and restores
# it. Earlier releases of deepbasics took all the full-batch steps of a Lightning epoch inside one Lightning
# step and counted them in the manual-optimization step counter; ``loops_of_own_loop`` writes that state as
# Lightning's own loop (automatic optimization, one step per batch) keeps it at the same epoch end.
FIT_LOOP = "fit_loop"
AUTOMATIC_STEPS = "epoch_loop.automatic_optimization.optim_progress"
MANUAL_STEPS = "epoch_loop.manual_optimization.optim_step_progress"
BATCHES = "epoch_loop.batch_progress"
BATCHES_THAT_STEPPED = "epoch_loop.state_dict"


def lightning_epochs_done(checkpoint: dict[str, Any]) -> int:
    """The Lightning epochs a checkpoint's run has finished when it resumes: the fit loop's processed
    epochs (a checkpoint saved at an epoch end has processed it; one saved within an epoch has not)."""
    return int(checkpoint["loops"][FIT_LOOP]["epoch_progress"]["current"]["processed"])


def loops_of_own_loop(loops: dict[str, Any], steps: int) -> dict[str, Any]:
    """``loops`` of a checkpoint saved at an epoch end by a release that ran its own loop, ``steps``
    optimizer steps in, as Lightning's own loop saves them there."""
    loops = copy.deepcopy(loops)
    fit = loops[FIT_LOOP]
    counted = {"ready": steps, "completed": steps}
    fit[AUTOMATIC_STEPS]["optimizer"]["step"] = {"total": dict(counted), "current": dict(counted)}
    fit[AUTOMATIC_STEPS]["optimizer"]["zero_grad"] = {
        part: {"ready": steps, "started": steps, "completed": steps} for part in ("total", "current")
    }
    fit[MANUAL_STEPS] = {part: {"ready": 0, "completed": 0} for part in ("total", "current")}
    batches = {"ready": steps, "started": steps, "processed": steps, "completed": steps}
    fit[BATCHES] = {"total": dict(batches), "current": dict(batches), "is_last_batch": True}
    fit[BATCHES_THAT_STEPPED] = {"_batches_that_stepped": steps}
    return loops
