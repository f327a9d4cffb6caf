"""Scaling out on Lightning's own machinery: DDP (gloo, 2 CPU processes) against one process, the data
sharding behind it, and the GPU paths (skipped without CUDA)."""

from types import SimpleNamespace

import pytest
import torch

from conftest import SHORT_BLOBS as RECIPE
from conftest import compose_train, read_metrics, run_cli, run_dirs
from deepbasics.data import BlobsDataModule
from deepbasics.errors import ConfigError


def net_state(run_dir):
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}


DYING_RANK = """
import os
from pathlib import Path

import lightning as L


class DieOnce(L.Callback):
    \"\"\"Rank 1 of the job with ``seed`` dies (no clean-up, as under kill -9) after ``epoch``, once.\"\"\"

    def __init__(self, seed, when, marker):
        self.dies, self.when, self.marker = seed == when, 30, Path(marker)

    def on_train_epoch_end(self, trainer, pl_module):
        if self.dies and trainer.global_rank == 1 and trainer.current_epoch + 1 == self.when:
            if not self.marker.exists():
                self.marker.touch()
                os._exit(9)
"""


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_trains_each_with_both_ranks_and_a_dying_rank_fails_its_job_alone(tmp_path, monkeypatch):
    """Each job of a sweep with trainer=ddp_cpu trains as a run of its own in a child process, whose second rank
    Lightning starts by running it again: both ranks in the job's directory, one sweep, never a second one. Each
    job ends where one process ends, up to rounding: in 25-row batches, ranks hold 13 and 12 rows of each and of
    the last (5 rows) 3 and 2; weighted by their shares, the averaged gradient is the one-process gradient of the
    same global batch. When a rank of job 01 dies, that job fails with one line and the sweep goes on; resume=auto
    finishes it."""
    from deepbasics.run.training import train

    (tmp_path / "dying.py").write_text(DYING_RANK)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    die = ["+callbacks.die._target_=dying.DieOnce", "+callbacks.die.seed=${seed}", "+callbacks.die.when=2",
           f"+callbacks.die.marker={tmp_path / 'died'}"]  # fmt: skip
    recipe = [*RECIPE, "data.batch_size=25", "epochs=60", "log_every=20", "val_every=20",
              "callbacks.model_checkpoint.every_n_epochs=20"]  # fmt: skip
    command = ["-m", *recipe, "trainer=ddp_cpu", "seed=1,2", *die]
    first = run_cli("deepbasics-train", *command, cwd=tmp_path, check=False)
    assert first.returncode == 1 and (tmp_path / "died").is_file(), first.stderr
    failed = [line for line in first.stderr.splitlines() if line.startswith("error: job")]
    # rank 0 hears of it from gloo (connection reset) or is ended by Lightning (return code -9): either way, one line
    assert len(failed) == 1 and failed[0].startswith("error: job 01_seed=2 failed: "), first.stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "blobs_mlp").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.name[:2].isdigit())
    assert read_metrics(jobs[1])["status"] == "failed" and read_metrics(jobs[0])["status"] == "completed"
    run_cli("deepbasics-train", *command, "resume=auto", cwd=tmp_path)
    assert [j.name for j in jobs] == ["00_seed=1", "01_seed=2"]
    for seed, job in zip((1, 2), jobs, strict=True):
        assert (job / "train_ddp_process_1.log").is_file() and read_metrics(job)["epochs"] == 60
        single = tmp_path / f"one{seed}"
        train(compose_train(*recipe, f"seed={seed}", run_dir=single))  # the reference, in this process
        a, b = net_state(single), net_state(job)
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
        one, two = read_metrics(single), read_metrics(job)
        for stage in ("train", "val", "test"):  # metrics are synced over both shards
            assert two[stage]["acc"] == one[stage]["acc"]
            assert two[stage]["loss"] == pytest.approx(one[stage]["loss"], abs=1e-5)
    assert not (tmp_path / "outputs" / "runs").exists()


def test_ranks_get_equal_disjoint_shards():
    dm = BlobsDataModule(centers=[[1, 1], [-1, -1]], n_train=6, n_val=3, n_test=0, seed=0)
    dm.setup()
    shards = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(
            world_size=2, global_rank=rank, strategy=SimpleNamespace(root_device=torch.device("cpu"))
        )
        dm._placed.clear()
        shards.append(dm.rows("train")[0])
    assert [len(s) for s in shards] == [3, 3]
    assert torch.equal(torch.cat(shards).sort(0).values, dm.splits["train"][0].sort(0).values)
    odd = BlobsDataModule(centers=[[1, 1], [-1, -1]], n_train=5, n_val=0, n_test=0, seed=0)
    odd.setup()
    odd.trainer = dm.trainer
    with pytest.raises(ConfigError, match="5 rows, which 2 processes cannot share equally"):
        odd.rows("train")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_gpu_run_matches_the_cpu_run(tmp_path):
    from deepbasics.run.training import train

    train(compose_train(*RECIPE, run_dir=tmp_path / "cpu"))
    train(compose_train(*RECIPE, "trainer=gpu", run_dir=tmp_path / "gpu"))
    a, b = net_state(tmp_path / "cpu"), net_state(tmp_path / "gpu")
    for key in a:
        torch.testing.assert_close(b[key].cpu(), a[key], rtol=0, atol=1e-4)
    assert read_metrics(tmp_path / "gpu")["test"]["acc"] == read_metrics(tmp_path / "cpu")["test"]["acc"]


@cuda
def test_gpu_data_is_placed_on_the_device_once(tmp_path):
    dm = BlobsDataModule(centers=[[1, 1], [-1, -1]], n_train=8, n_val=0, n_test=0, seed=0)
    dm.setup()
    dm.trainer = SimpleNamespace(
        world_size=1, global_rank=0, strategy=SimpleNamespace(root_device=torch.device("cuda", 0))
    )
    x, y = dm.rows("train")
    assert x.is_cuda and y.is_cuda and dm.rows("train")[0] is x


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_directory(tmp_path):
    """torchrun starts both ranks itself; each runs Hydra, and both must land in one run directory."""
    import subprocess
    import sys
    from pathlib import Path

    from deepbasics.run.training import train

    torchrun = Path(sys.executable).parent / "torchrun"
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "deepbasics.train",
        *RECIPE,
        "trainer=ddp_cpu",
    ]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = run_dirs(tmp_path, "blobs_mlp")
    assert run.name.startswith("torchrun-") and proc.stdout.count("run directory:") == 1
    train(compose_train(*RECIPE, run_dir=tmp_path / "one"))
    a, b = net_state(tmp_path / "one"), net_state(run)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)


def test_a_ddp_job_under_the_parallel_launcher_is_refused_in_one_line():
    """A joblib worker cannot be started again as Lightning starts a DDP job's other ranks: refused, not hung."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from deepbasics.cli.commands import _in_own_process
    from deepbasics.config.paths import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp_cpu", "hydra/launcher=parallel"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ConfigError, match=r"^trainer.strategy=ddp: a sweep's DDP jobs train under the basic"):
            _in_own_process(cfg)
    finally:
        HydraConfig.instance().cfg = None
