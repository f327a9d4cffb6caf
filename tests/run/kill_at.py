"""`python tests/kill_at.py EPOCH [deepbasics-train args]`: deepbasics-train that SIGKILLs itself once
training has passed EPOCH, the hard crash a resume must survive (nothing gets to clean up)."""

import os
import signal
import sys

from deepbasics.cli.commands import train as main
from deepbasics.models.lightning_modules import FullBatchModule

kill_at = int(sys.argv.pop(1))
step = FullBatchModule.training_step


def training_step_then_maybe_die(self, batch, batch_idx):
    step(self, batch, batch_idx)
    if self.global_step >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


FullBatchModule.training_step = training_step_then_maybe_die
main()
