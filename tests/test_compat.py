"""deepbasics.compat holds what Lightning and Hydra offer only privately; these tests fail loudly when an
upgrade of either moves one of those pieces, and keep every private name inside that one module."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

import deepbasics
from conftest import REPO, run_in_this_process
from deepbasics import compat
from deepbasics.errors import ConfigError

FIXTURES = Path(__file__).with_name("fixtures")


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


@pytest.mark.parametrize("fixture", ["full_batch_epoch200_of_600.ckpt", "minibatch_epoch10_of_30.ckpt"])
def test_a_checkpoint_of_an_earlier_release_is_refused_in_one_line(fixture, tmp_path, monkeypatch, capfd):
    """Checkpoints of the releases with their own loop and nets by name: each command says so, writing nothing."""
    old = FIXTURES / fixture
    for command, args in (
        ("deepbasics-evaluate", [f"ckpt_path={old}"]),
        ("deepbasics-predict", [f"ckpt_path={old}", "inputs=[[1,1],[1,-1]]"]),
        ("deepbasics-train", [f"resume={old}"]),
    ):
        refused = run_in_this_process(command, args, tmp_path, monkeypatch, capfd)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "earlier deepbasics release (checkpoint format 1; this one reads 2)" in refused.stderr, command
    with pytest.raises(ConfigError, match="earlier deepbasics release"):
        deepbasics.load_model(old)
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.json")), "nothing written"
