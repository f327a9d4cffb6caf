"""deepbasics.compat holds what Lightning and Hydra offer only privately; these tests fail loudly when an
upgrade of either moves one of those pieces, and keep every private name inside that one module."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, compose_train, read_metrics, run_in_this_process
from deepbasics import compat

FIXTURES = Path(__file__).with_name("fixtures")
# A run of an earlier release (the module's own loop), killed at epoch 300: last.ckpt holds epoch 200.
OLD_RUN = ["experiment=blobs_mlp", "epochs=600", "log_every=50", "val_every=100",
    "callbacks.model_checkpoint.every_n_epochs=200",
           "model.optimizer._target_=torch.optim.Adam", "model.optimizer.lr=0.01"]  # fmt: skip


def test_private_names_live_in_compat_alone(monkeypatch, capsys):
    """scripts/private_names.py as a contributor runs it (its main, in this process, where Lightning is
    imported already): one line per use, all of them in compat.py."""
    spec = importlib.util.spec_from_file_location("private_names", REPO / "scripts" / "private_names.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["private_names.py"])
    with pytest.raises(SystemExit) as exit:
        script.main()
    *uses, total = capsys.readouterr().out.strip().splitlines()
    assert exit.value.code == 0 and total == f"{len(uses)} uses of private names of Lightning or Hydra", uses
    assert uses and {use.split(":")[0] for use in uses} == {"deepbasics/compat.py"}, uses
    # the walk sees what it is there to see: uses like those of the release that ran its own loop
    tree = ast.parse("""
from lightning.pytorch.callbacks import ModelCheckpoint
from hydra._internal.config_loader_impl import ConfigLoaderImpl

class ScheduledCheckpoint(ModelCheckpoint):
    def on_train_start(self, trainer, pl_module):
        self._last_global_step_saved = trainer.global_step

    def _save_last_checkpoint(self, trainer, candidates):
        self._own = trainer._checkpoint_connector.dump_checkpoint()
""")
    assert sorted(name for _, _, name in script.found_in(tree, Path("old.py"))) == [
        "_checkpoint_connector", "_last_global_step_saved", "_save_last_checkpoint",
        "hydra._internal.config_loader_impl",
    ]  # fmt: skip


def test_hydras_grid_sweeper_is_still_where_it_was():
    from hydra.plugins.sweeper import Sweeper

    sweeper = compat.basic_sweeper()
    assert issubclass(sweeper, Sweeper) and callable(sweeper.validate_batch_is_legal) and callable(sweeper.sweep)


def test_lightnings_loop_state_has_the_counters_compat_reads_and_writes(tmp_path):
    from deepbasics.run.training import train

    recipe = ["epochs=200", "log_every=50", "val_every=100", "callbacks.model_checkpoint.save_top_k=-1"]
    train(compose_train(*recipe, run_dir=tmp_path))
    new = torch.load(tmp_path / "checkpoints" / "best-epoch99.ckpt", weights_only=True)
    fit = new["loops"][compat.FIT_LOOP]
    assert fit[compat.STEPS]["optimizer"]["step"]["total"]["completed"] == 100
    assert fit[compat.BATCHES]["total"]["completed"] == 100 and fit[compat.BATCHES]["is_last_batch"]
    assert fit[compat.BATCHES_THAT_STEPPED]["_batches_that_stepped"] == 100
    assert fit[compat.EPOCHS]["total"] == {"ready": 100, "started": 100, "processed": 100, "completed": 99}
    # what compat writes is what Lightning itself keeps at the end of an epoch
    assert compat.loops_at_epoch_end(new["loops"], 100) == new["loops"]
    # the checkpoint of an earlier release, brought to the same form
    old = torch.load(FIXTURES / "full_batch_epoch200_of_600.ckpt", weights_only=True)
    upgraded = compat.loops_at_epoch_end(old["loops"], 200)[compat.FIT_LOOP]

    def shape(d):
        return {k: shape(v) for k, v in d.items()} if isinstance(d, dict) else type(d).__name__

    assert shape(upgraded) == shape(fit)
    assert upgraded[compat.STEPS]["optimizer"]["step"]["total"]["completed"] == 200


def test_a_checkpoint_of_the_releases_with_their_own_loop_resumes_to_the_same_end(tmp_path, monkeypatch, capfd):
    """Resumed by today's loop, the earlier release's run ends where today's uninterrupted run ends."""
    from deepbasics.run.training import train

    train(compose_train(*OLD_RUN, run_dir=tmp_path / "whole"))
    run = tmp_path / "outputs" / "runs" / "blobs_mlp" / "earlier" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(FIXTURES / "full_batch_epoch200_of_600.ckpt", run / "last.ckpt")
    out = run_in_this_process("deepbasics-train", [*OLD_RUN, f"resume={run.parent}"], tmp_path, monkeypatch, capfd)
    assert out.returncode == 0 and f"resuming {run / 'last.ckpt'} at epoch 200/600" in out.stdout
    # The fixture was made on another CPU, whose float32 kernels round otherwise: a tolerance, not bit for bit
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (tmp_path / "whole", run.parent))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    assert read_metrics(run.parent)["test"] == pytest.approx(read_metrics(tmp_path / "whole")["test"], abs=1e-6)


def test_a_minibatch_checkpoint_of_those_releases_evaluates_but_does_not_resume(tmp_path, monkeypatch, capfd):
    old = FIXTURES / "minibatch_epoch10_of_30.ckpt"
    evaluated = run_in_this_process("deepbasics-evaluate", [f"ckpt_path={old}"], tmp_path, monkeypatch, capfd)
    assert evaluated.returncode == 0
    (evaluation,) = (tmp_path / "outputs" / "evaluations").iterdir()
    assert read_metrics(evaluation)["epochs"] == 10 and "acc" in read_metrics(evaluation)["test"]
    refused = run_in_this_process("deepbasics-train", [f"resume={old}"], tmp_path, monkeypatch, capfd)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "cannot be continued; it still evaluates and predicts" in refused.stderr
    assert not list((tmp_path / "outputs").glob("runs/*/*/checkpoints")), "nothing was trained"
