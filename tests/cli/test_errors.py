"""Bad input through the console scripts' entry points: exit status, one line on stderr that says what is wrong and how to
fix it, and an earlier run's directory left byte for byte as it was."""

import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import DIABETES, data_of, read_metrics, run_cli, run_dirs, run_in_this_process

SHORT = ["epochs=20", "log_every=10", "val_every=10", "callbacks.model_checkpoint.every_n_epochs=10"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory holding one finished run and the broken inputs the cases point at."""
    cwd = tmp_path_factory.mktemp("errors")
    with pytest.MonkeyPatch.context() as monkeypatch:  # the command in this process (a module's fixture)
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["deepbasics-train", "experiment=linear_scores", *SHORT])
        from deepbasics.cli.commands import train

        train()
    files = {
        "nonnumeric.csv": "1,2,0\n3,abc,1\n",
        "nan.csv": "1,2,0\n3,nan,1\n",
        "ragged.csv": "1,2,0\n3,1\n",
        "empty.csv": "",
        "labels.csv": "1,2,0\n3,1,2\n",
        "oneclass.csv": "1,2,1\n3,1,1\n",
        "notackpt.ckpt": "just text\n",
        # CSV dialects a spreadsheet or another tool writes
        "tabs.csv": "1\t2\t0\n3\t1\t1\n2\t2\t0\n",
        "semicolons.csv": "a;b;y\n1.5;2;0\n3;1;1\n",
        "named.csv": "a,b,y\n1,2,0\n3,1,1\n",
        "semicolon_inputs.csv": "1;2\n3;4\n",
        "decimal_commas.csv": "1,5;2;0\n3;1,25;1\n",
        "trailing_commas.csv": "1,2,0,\n3,1,1,\n",
        "word_labels.csv": "1,2,no\n3,1,yes\n2,2,no\n",
        "korean_utf8.csv": "키,몸무게,y\n1,2,0\n3,1,1\n",
    }
    for name, text in files.items():
        (cwd / name).write_text(text)
    (cwd / "latin1.csv").write_bytes("café,b,y\n1,2,0\n3,1,1\n".encode("latin-1"))
    (cwd / "utf16.csv").write_bytes("1,2,0\n3,1,1\n".encode("utf-16"))
    (cwd / "named.csv.gz").write_bytes(gzip.compress(b"a,b,y\n1,2,0\n3,1,1\n"))
    (cwd / "a_directory").mkdir()
    damaged = bytearray(gzip.compress(b"a,b,y\n1,2,0\n" * 50, mtime=0))
    damaged[20:28] = bytes(8)
    (cwd / "damaged.csv.gz").write_bytes(bytes(damaged))
    (run,) = run_dirs(cwd, "linear_scores")
    (cwd / "earlier_run").write_text(str(run))
    last = (run / "checkpoints" / "last.ckpt").read_bytes()
    (cwd / "cut.ckpt").write_bytes(last[: len(last) // 2])
    (cwd / "cut_run" / "checkpoints").mkdir(parents=True)
    (cwd / "cut_run" / "checkpoints" / "last.ckpt").write_bytes(last[: len(last) // 3])
    # a checkpoint whose unpickling would run code (create a file), and one with damaged bytes inside
    torch.save({"deepbasics": {}, "payload": RunsCode(cwd / "code_ran")}, cwd / "unsafe.ckpt")
    damaged = bytearray(last)
    damaged[60:120] = bytes(b ^ 0x5A for b in damaged[60:120])  # inside archive/data.pkl, the zip index intact
    (cwd / "damaged.ckpt").write_bytes(bytes(damaged))
    return cwd


def outputs(cwd: Path) -> list[str]:
    """The run and evaluation directories under the working directory's outputs/."""
    return sorted(str(p) for p in (cwd / "outputs").glob("*/*/*")) + sorted(
        str(p) for p in (cwd / "outputs").glob("*/*")
    )


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


CSV = ["experiment=logistic_diabetes", "model.net.in_features=2"]
TRAIN = "deepbasics-train"
CASES = {
    "unknown key": (TRAIN, ["epoks=10"], 2, "unknown config key 'epoks'"),
    "unknown group option": (TRAIN, ["data=foo"], 2, "Could not find 'data/foo'; Available options in 'data': blobs, csv, toy"),
    "bad override syntax": (TRAIN, ["epochs=["], 2, "cannot parse override 'epochs=['"),
    "missing required value": (TRAIN, ["experiment=logistic_diabetes"], 2, "data.path must be set: pass data.path=<value>"),
    "negative lr": (TRAIN, ["model.optimizer.lr=-0.1"], 2, "model.optimizer (SGD): Invalid learning rate: -0.1; check its arguments"),
    "an optimizer not in the template's form": (TRAIN, ["~model.optimizer._partial_"], 2, "model.optimizer is built by the module around its parameters: add _partial_: true"),
    "an optimizer's unknown option": (TRAIN, ["+model.optimizer.momentun=0.9"], 2, "model.optimizer (SGD): SGD.__init__() got an unexpected keyword argument 'momentun'"),
    "a net torch cannot import": (TRAIN, ["model.net._target_=mynets.Perceptron"], 2, "model.net"),
    "zero epochs": (TRAIN, ["epochs=0"], 2, "epochs=0 must be a positive integer"),
    "trainer schedule set by the run": (TRAIN, ["epochs=2000", "+trainer.max_epochs=5"], 2, "trainer.max_epochs is set by the run itself; pass epochs=<epochs> instead"),
    "trainer logging set by the run": (TRAIN, ["+trainer.log_every_n_steps=7"], 2, "trainer.log_every_n_steps is set by the run itself; pass log_every=<epochs> instead"),
    "checkpoint directory set by the run": (TRAIN, ["+callbacks.model_checkpoint.dirpath=elsewhere"], 2, "callbacks.model_checkpoint.dirpath=elsewhere: checkpoints go into the run directory's checkpoints/"),
    "negative hidden size": (TRAIN, ["model.net.hidden_size=-3"], 2, "model.net (NeuralNet): Trying to create tensor with negative dimension -3"),
    "input width": (TRAIN, ["model.net.in_features=3"], 2, "model.net.in_features=3 but the data has 2 features; set model.net.in_features=2"),
    "csv missing": (TRAIN, [*CSV, "data.path=nope.csv"], 2, "nope.csv; pass data.path=<csv file>"),
    "csv empty": (TRAIN, [*CSV, "data.path=empty.csv"], 2, "empty.csv has no rows"),
    "csv non-numeric": (TRAIN, [*CSV, "data.path=nonnumeric.csv"], 2, "could not convert string 'abc' to float32 at row 1, column 2"),
    "csv nan": (TRAIN, [*CSV, "data.path=nan.csv"], 2, "data.train x row 1, column 1 is nan"),
    "csv column count": (TRAIN, [*CSV, "data.path=ragged.csv"], 2, "the number of columns changed from 3 to 2 at row 2"),
    "labels not 0/1": (TRAIN, [*CSV, "data.path=labels.csv"], 2, "data.train has label 2; a binary classifier needs labels 0 and 1"),
    "single class": (TRAIN, [*CSV, "data.path=oneclass.csv"], 2, "data.train labels are all 1; a classifier needs examples of both 0 and 1"),
    "toy lengths": (TRAIN, ["experiment=linear_scores", "data.train.y=[1,2,3]"], 2, "data.train: x has 4 rows but y has 3"),
    "resume at nothing": (TRAIN, ["resume=nowhere"], 2, "resume=nowhere: no such run directory or checkpoint file"),
    "resume at a non-checkpoint": (TRAIN, ["resume=notackpt.ckpt"], 2, "notackpt.ckpt is not a readable checkpoint"),
    "resume at a truncated checkpoint": (TRAIN, ["resume=cut.ckpt"], 2, "cut.ckpt is not a readable checkpoint"),
    "resume a run with a truncated checkpoint": (TRAIN, ["resume=cut_run"], 2, "last.ckpt is not a readable checkpoint (not a torch archive, or a truncated one)"),
    "resume another model's run": (TRAIN, ["experiment=blobs_mlp", "resume={run}"], 2, "is a run of linear_scores, not experiment=blobs_mlp"),
    "resume changing the model": (TRAIN, ["resume={run}", "epochs=40", "model=neuralnet"], 2, "model=neuralnet cannot change on resume"),
    "unwritable output directory": (TRAIN, ["paths.output_dir=empty.csv/outputs"], 2, "cannot write outputs (Not a directory"),
    "evaluate nothing": ("deepbasics-evaluate", ["ckpt_path=nope.ckpt"], 2, "ckpt_path=nope.ckpt: no such file"),
    "evaluate a non-checkpoint": ("deepbasics-evaluate", ["ckpt_path=notackpt.ckpt"], 2, "notackpt.ckpt is not a readable checkpoint"),
    "predict without inputs": ("deepbasics-predict", ["ckpt_path={run}/checkpoints/last.ckpt"], 2, "inputs must be set"),
    "predict wrong width": ("deepbasics-predict", ["ckpt_path={run}/checkpoints/last.ckpt", "inputs=[[1,2]]"], 2, "inputs of shape 1x2: the model takes rows of 1 features"),
    "predict a truncated checkpoint": ("deepbasics-predict", ["ckpt_path=cut.ckpt", "inputs=[1]"], 2, "cut.ckpt is not a readable checkpoint"),
    "evaluate an unsafe checkpoint": ("deepbasics-evaluate", ["ckpt_path=unsafe.ckpt"], 2, "unsafe.ckpt holds objects other than tensors and plain values (posix.system), so it was not loaded: loading it could run code. deepbasics never writes such files; never disable this check for a file you did not make"),
    "resume at an unsafe checkpoint": (TRAIN, ["resume=unsafe.ckpt"], 2, "so it was not loaded"),
    "predict a damaged checkpoint": ("deepbasics-predict", ["ckpt_path=damaged.ckpt", "inputs=[1]"], 2, "damaged.ckpt is corrupt or was not written by deepbasics (the safe loader stopped)"),
    "unquoted path with a space": (TRAIN, ["experiment=logistic_diabetes", "data.path=my data/당뇨.csv"], 2, """quote the value for Hydra inside the shell's quotes: 'data.path="my data/당뇨.csv"'"""),
    "unquoted delimiter": (TRAIN, ["experiment=logistic_diabetes", "data.delimiter=;"], 2, """'data.delimiter=";"'"""),
    # values out of their range, of the wrong type, or at odds with each other
    "split fraction above 1": (TRAIN, [*CSV, "data.path=named.csv", "data.val_fraction=1.5"], 2, "data.val_fraction=1.5 must be a number from 0 up to (not including) 1"),
    "negative split fraction": (TRAIN, [*CSV, "data.path=named.csv", "data.test_fraction=-0.2"], 2, "data.test_fraction=-0.2 must be a number from 0"),
    "split fractions summing past 1": (TRAIN, [*CSV, "data.path=named.csv", "data.val_fraction=0.5", "data.test_fraction=0.5"], 2, "leave no rows to train on; keep their sum below 1"),
    "negative seed": (TRAIN, ["seed=-7"], 2, "seed=-7 must be an integer from 0 to 4294967295"),
    "fractional seed": (TRAIN, ["seed=2.5"], 2, "seed=2.5 must be an integer from 0 to 4294967295"),
    "seed as a word": (TRAIN, ["seed=lucky"], 2, "seed='lucky' must be an integer"),
    "data seed": (TRAIN, ["data.seed=-1"], 2, "data (BlobsDataModule): expected non-negative integer"),
    "patience as a word": (TRAIN, ["callbacks=early_stopping", "callbacks.early_stopping.patience=long"], 2, "callbacks.early_stopping.patience='long' must be an integer (EarlyStopping's patience)"),
    "early stopping mode": (TRAIN, ["callbacks=early_stopping", "callbacks.early_stopping.mode=lowest"], 2, "callbacks.early_stopping (EarlyStopping): `mode` can be min, max, got lowest"),
    "a negative number of checkpoints": (TRAIN, ["callbacks.model_checkpoint.save_top_k=-2"], 2, "Invalid value for save_top_k=-2"),
    "boolean as a word": (TRAIN, [*CSV, "data.path=named.csv", "data.header=yes"], 2, "data.header='yes' must be true or false (CSVDataModule's header)"),
    "boolean as a number": (TRAIN, [*CSV, "data.path=named.csv", "data.standardize=1"], 2, "data.standardize=1 must be true or false (CSVDataModule's standardize)"),
    "negative split size": (TRAIN, ["data.n_val=-5"], 2, "data.n_val=-5 must be 0 or more (rows)"),
    "zero spread": (TRAIN, ["data.cluster_std=0"], 2, "data.cluster_std=0 must be a number above 0"),
    "zero batch size": (TRAIN, ["data.batch_size=0"], 2, "data.batch_size=0 must be a positive integer (rows per step)"),
    "one class": (TRAIN, ["experiment=blobs_multiclass", "model.num_classes=1"], 2, "model.num_classes=1 must be an integer of 2 or more"),
    "monitor mode": (TRAIN, ["monitor.mode=lowest"], 2, "monitor.mode='lowest': use min or max"),
    "progress style": (TRAIN, ["progress=fancy"], 2, "progress='fancy': use auto, bar or lines"),
    # a monitored metric the run does not log, found before the first epoch
    "monitor misspelt": (TRAIN, ["monitor.metric=val/los"], 2, "monitor.metric=val/los: it is not a metric this run logs; pick one of train/loss, train/acc, train/auroc, val/loss, val/acc, val/auroc"),
    "monitor of a test metric": (TRAIN, ["monitor.metric=test/acc"], 2, "test metrics are measured once, after training"),
    "early stopping monitor": (TRAIN, ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/accuracy"], 2, "callbacks.early_stopping.monitor=val/accuracy: it is not a metric this run logs"),
    "monitor of a split the data lacks": (TRAIN, [*CSV, "data.path=named.csv", "data.header=true", "monitor.metric=val/loss"], 2, "monitor.metric=val/loss but the data has no val split; monitor train/loss instead"),
    "regression monitor": (TRAIN, ["experiment=linear_scores", "monitor.metric=train/acc"], 2, "pick one of train/loss, train/mae, train/mse, train/r2"),
    # CSV dialects: what the file looks like, and the setting that reads it
    "tab-separated file": (TRAIN, [*CSV, "data.path=tabs.csv"], 2, "it looks tab-separated: pass data.delimiter=tab"),
    "semicolon-separated file": (TRAIN, [*CSV, "data.path=semicolons.csv", "data.header=true"], 2, "it looks semicolon-separated: pass data.delimiter=semicolon"),
    "a word that is no delimiter": (TRAIN, [*CSV, "data.path=named.csv", "data.delimiter=colon"], 2, "data.delimiter='colon' must be one character or a word: comma, semicolon, tab, pipe, space"),
    "header row without data.header": (TRAIN, [*CSV, "data.path=named.csv.gz"], 2, "if the first row names the columns, pass data.header=true"),
    "latin-1 file": (TRAIN, [*CSV, "data.path=latin1.csv", "data.header=true"], 2, """it is not utf-8 text (it looks like latin-1); save it as UTF-8 (a spreadsheet's "CSV UTF-8") or pass data.encoding=latin-1"""),
    "UTF-16 file": (TRAIN, [*CSV, "data.path=utf16.csv"], 2, "(it looks like utf-16); save it as UTF-8"),
    "decimal commas": (TRAIN, [*CSV, "data.path=decimal_commas.csv", "data.delimiter=semicolon"], 2, "its numbers use decimal commas (1,5): save it with decimal points (1.5) and commas between cells"),
    "UTF-8 file said to be cp949": (TRAIN, [*CSV, "data.path=korean_utf8.csv", "data.header=true", "data.encoding=cp949"], 2, "it is not cp949 text but UTF-8; drop data.encoding"),
    "a codec that is no text encoding": (TRAIN, [*CSV, "data.path=named.csv", "data.encoding=hex"], 2, "data.encoding='hex' is not a text encoding Python knows"),
    "damaged compressed file": (TRAIN, [*CSV, "data.path=damaged.csv.gz", "data.header=true"], 2, "damaged.csv.gz is a damaged compressed file (CRC check failed"),
    "a comma at the end of each row": (TRAIN, [*CSV, "data.path=trailing_commas.csv"], 2, "every row ends with a comma (an empty last column): remove the comma at the end of each row"),
    "a column of words": (TRAIN, [*CSV, "data.path=word_labels.csv"], 2, "column 3 holds text ('yes'): every cell must be a number; map text labels to numbers (yes/no to 1/0)"),
    "an option the data group does not have": (TRAIN, ["experiment=linear_scores", "+data.path=named.csv"], 2, "data.path is not an option of ToyDataModule, which data is here; remove it, or pick a group that has it"),
    "an option the model group does not have": (TRAIN, ["+model.num_classes=3"], 2, "model.num_classes is not an option of BinaryClassifier"),
    "a directory as the CSV": (TRAIN, [*CSV, "data.path=a_directory"], 2, "a_directory is a directory; pass data.path=<csv file>"),
    "resume as a boolean": (TRAIN, ["resume=true"], 2, "resume=True: pass resume=auto, a run directory or a .ckpt file"),
    "unknown encoding": (TRAIN, [*CSV, "data.path=named.csv", "data.encoding=klingon"], 2, "data.encoding='klingon' is not a text encoding Python knows"),
    # predict and evaluate
    "predict a NaN": ("deepbasics-predict", ["ckpt_path={run}", "inputs=[1,nan]"], 2, "inputs row 1, column 0 is nan; every input must be a finite number"),
    "predict a semicolon-separated file": ("deepbasics-predict", ["ckpt_path={run}", "inputs=semicolon_inputs.csv"], 2, "could not convert string '1;2' to float32 at row 0, column 1; it looks semicolon-separated: save it comma-separated"),
    "predict from model.pt": ("deepbasics-predict", ["ckpt_path={run}/model.pt", "inputs=[1]"], 2, "model.pt holds a net's weights alone (the model.pt a run exports for plain PyTorch), not a checkpoint; pass its run directory, ckpt_path={run}, or load it in Python with deepbasics.load_model"),
    "evaluate a directory that is no run": ("deepbasics-evaluate", ["ckpt_path=a_directory"], 2, "ckpt_path=a_directory is a directory without checkpoints/last.ckpt; pass a run directory or a .ckpt"),
    "evaluate with data.path, data not a CSV": ("deepbasics-evaluate", ["ckpt_path={run}", "data.path=named.csv"], 2, "data.path=named.csv: this run's data is not a CSV file (deepbasics.data.ToyDataModule); drop it"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clear_line(workdir, case, monkeypatch, capfd):
    command, args, code, message = CASES[case]
    run = Path((workdir / "earlier_run").read_text())
    before, directories = snapshot(run), outputs(workdir)
    proc = run_in_this_process(command, [a.format(run=run) for a in args], workdir, monkeypatch, capfd)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(run=run) in lines[0], proc.stderr
    assert snapshot(run) == before, "an earlier run must be left exactly as it was"
    assert outputs(workdir) == directories, "a refused run leaves no run directory behind"
    assert not (workdir / "code_ran").exists(), "an unsafe checkpoint must never run its code"
    assert "weights_only" not in proc.stderr, "never advice that weakens the check"


def test_divergence_names_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path):
    args = [
        "experiment=linear_scores",
        "model.optimizer.lr=0.2",
        "log_every=10",
        "val_every=10",
        "callbacks.model_checkpoint.every_n_epochs=10",
    ]
    proc = run_cli("deepbasics-train", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    (run,) = run_dirs(tmp_path, "linear_scores")
    line = proc.stderr.strip()
    assert line.startswith("error: the loss became inf at epoch 47;")
    assert f"kept the last good checkpoint, {run / 'checkpoints' / 'last.ckpt'} (epoch 40)" in line
    import torch

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 40
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    metrics = read_metrics(run)
    assert metrics["status"] == "failed" and metrics["failed_at_epoch"] == 47
    assert "the loss became inf at epoch 47" in metrics["error"]
    json.dumps(metrics)  # valid JSON, no NaN


def test_values_at_the_edges_are_taken(workdir, monkeypatch, capfd):
    """What the checks must let through: a checkpoint that keeps the latest by step, a callback of another
    kind with an option named like EarlyStopping's, one batch to overfit, one number as predict's inputs."""
    from conftest import compose_train
    from deepbasics.config.settings import check_settings

    latest = ["experiment=linear_scores", *SHORT, "callbacks.model_checkpoint.monitor=step",
              "callbacks.model_checkpoint.mode=max", "debug=overfit"]  # fmt: skip
    proc = run_in_this_process(TRAIN, latest, workdir, monkeypatch, capfd)
    assert proc.returncode == 0, proc.stderr
    finder = [
        "+callbacks.lrf._target_=lightning.pytorch.callbacks.LearningRateFinder",
        "+callbacks.lrf.mode=exponential",
    ]
    check_settings(compose_train(*finder, run_dir=workdir / "unused"))
    run = Path((workdir / "earlier_run").read_text())
    proc = run_in_this_process("deepbasics-predict", [f"ckpt_path={run}", "inputs=5"], workdir, monkeypatch, capfd)
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["predictions"]) == 1, proc.stderr
    one = [
        *CSV,
        "data.path=named.csv",
        "data.header=true",
        "data.target=y",
        "data.features=a",
        "model.net.in_features=1",
    ]
    check_settings(cfg := compose_train(*one, run_dir=workdir / "unused"))

    assert data_of(cfg).splits["train"][0].shape[1] == 1  # data.features=a: a list of one column, not its letters


def test_diabetes_csv_is_fine(workdir):
    """The control case: the real table passes the same checks."""
    assert DIABETES.is_file()


def test_a_refused_run_removes_only_a_directory_of_its_own(tmp_path, monkeypatch, capfd):
    """A directory given as hydra.run.dir holds the user's files; one that another process holds (its lock)
    is that process's; one with files older than the command is an earlier run's: each stays."""
    import fcntl
    import time

    from deepbasics.config.run_dir import discard_unstarted, fresh_stem

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "server.log").write_text("the user's\n")
    proc = run_in_this_process(TRAIN, [f"hydra.run.dir={mine}", "seed=-1"], tmp_path, monkeypatch, capfd)
    assert proc.returncode == 2 and (mine / "server.log").read_text() == "the user's\n"

    held = tmp_path / "outputs" / "runs" / "blobs_mlp" / fresh_stem()
    (held / ".hydra").mkdir(parents=True)
    (held / ".hydra" / "config.yaml").write_text("{}\n")
    with open(held / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file holds it, as another process would
        discard_unstarted(held, tmp_path / "outputs", since=time.time() - 60)
    assert held.is_dir()
    discard_unstarted(held, tmp_path / "outputs", since=time.time() + 60)  # its files predate "this command"
    assert held.is_dir()
    discard_unstarted(held, tmp_path / "outputs", since=time.time() - 60)  # now it is this command's own
    assert not held.exists() and not (tmp_path / "outputs" / "runs").exists() and (tmp_path / "outputs").is_dir()


def test_ctrl_c_before_training_is_one_line_and_leaves_no_run(tmp_path, monkeypatch, capfd):
    """Ctrl-C while torch loads or the data is read (before any checkpoint can be saved): one line, 130."""
    from deepbasics.run import training

    def interrupted(cfg, overrides=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    proc = run_in_this_process(TRAIN, ["experiment=linear_scores"], tmp_path, monkeypatch, capfd)
    assert proc.returncode == 130
    assert proc.stderr == (
        "SIGINT: stopped before training; nothing was trained or lost; run the command again (a sweep: the same"
        " command with resume=auto)\n"
    )
    assert not (tmp_path / "outputs" / "runs").exists()


def test_a_full_disk_names_the_file_and_says_to_free_space(tmp_path, monkeypatch, capfd):
    import errno

    from deepbasics import files

    def full(fd):  # the disk fills while the first of the run's files is written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    result = run_in_this_process("deepbasics-train", ["experiment=linear_scores", *SHORT], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"error: cannot write outputs (No space left on device: {tmp_path}/outputs/runs/"), line
    assert line.endswith("free space on that disk, or pass paths.output_dir=<a directory on another disk>")
    assert not list((tmp_path / "outputs").rglob(".tmp-*")), "no half-written temporary file is left"
