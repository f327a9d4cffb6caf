"""`python tests/run/stop_at.py kill|term|int|pause POINT [deepbasics-train args]`: deepbasics-train that
stops itself at POINT, for the crashes a resume must survive and the second writer a run directory must
refuse.

POINT is an epoch (at the end of the step that reaches it, before that epoch's validation and checkpoints)
or a step of the end phase: `before:<name>` or `after:<name>` of a function the end phase
(deepbasics.run.finish) calls. `kill` is SIGKILL: nothing gets to clean up; `term` and `int` send SIGTERM
and SIGINT, as a cluster or Ctrl-C does. `pause` writes `paused` into the working directory and sleeps
until killed."""

import os
import signal
import sys
import time
from pathlib import Path

from deepbasics.models.lightning_modules import TaskModule
from deepbasics.run import finish


def install(action: str, point: str) -> None:
    """From now on, this process stops (``kill`` or ``pause``) at ``point``."""

    def stop() -> None:
        if action in ("kill", "term", "int"):
            os.kill(os.getpid(), {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}[action])
            if action != "kill":  # the handler runs now, between two bytecodes
                return
        Path("paused").write_text(str(os.getpid()))
        while True:
            time.sleep(1)

    if point.isdigit():
        batch_end = TaskModule.on_train_batch_end

        def batch_end_then_maybe_stop(self, outputs, batch, batch_idx):
            batch_end(self, outputs, batch, batch_idx)
            if self.global_step >= int(point) * self.trainer.num_training_batches:  # the epoch's last step
                stop()

        TaskModule.on_train_batch_end = batch_end_then_maybe_stop
        return
    when, name = point.split(":")
    original = getattr(finish, name)

    def wrapped(*args, **kwargs):
        if when == "before":
            stop()
        result = original(*args, **kwargs)
        stop()
        return result

    setattr(finish, name, wrapped)


if __name__ == "__main__":
    from deepbasics.cli.commands import train

    action, point = sys.argv.pop(1), sys.argv.pop(1)
    install(action, point)
    train()
