"""Both READMEs as a reader uses them: every command of their ``bash`` blocks run as printed, in order, from a
directory laid out as the project's root (deepbasics' console scripts through their entry points in this process,
which is the code path of a new process without torch's start each time; everything else through bash); a section
that brings files of its own runs in an empty directory holding them. The few commands that need a server, a GPU, a
cluster or the network, or that take minutes, run with ``--help`` or ``dry_run=true`` instead, or not at all: each
is named in INSTEAD with why. Then what the pictures and your own model and data promise."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import BIN, REPO, read_metrics, run_in_this_process, run_main

READMES = ("README.md", "README.ko.md")
ENTRY_POINTS = {"deepbasics-train", "deepbasics-evaluate", "deepbasics-predict"}
# (a piece of the command as printed, what runs instead, why)
INSTEAD = [
    ("make test-fast", None, "a part of this suite"),
    ("make test", None, "the suite itself: CI runs it (bash .ci/run)"),
    ("make clean-venv", None, "would remove the environment these tests run in"),
    ("make train TORCH=", None, "downloads torch's CUDA build"),
    ("make train", None, "its set-up is what CI's fresh clone runs, its training experiment=blobs_mlp's above"),
    ("hydra/launcher=parallel", "dry_run=true", "its workers start torch afresh (20 s): tests/reports/test_sweeps.py"),
    ("pip install", None, "installs from the network"),
    ("tensorboard --logdir", "--help", "a server that runs until stopped (tests/reports read the events it shows)"),
    ("mlflow ui", "--help", "a server that runs until stopped (tests/reports/test_mlflow_runs.py reads the store)"),
    ("torchrun", None, "needs GPUs (tests/run/test_distributed.py runs torchrun on two CPU ranks)"),
    ("trainer=gpu", "--help", "needs a GPU: the config composes, nothing trains"),
    ("trainer=ddp ", "--help", "needs GPUs: the config composes, nothing trains"),
    ("trainer=ddp_cpu", "--help", "its ranks run the command again as processes: tests/run/test_distributed.py"),
    ("hydra/launcher=slurm", "dry_run=true", "needs a SLURM cluster: the sweep's jobs are listed, none submitted"),
    ("hydra/launcher=vectorized_slurm", "dry_run=true", "needs a SLURM cluster (its local executor is tested)"),
    ("scripts/private_names.py", None, "tests/test_compat.py runs it"),
    ("scripts/benchmark.py", "--help", "takes minutes; its numbers are quoted, not checked"),
    ("scripts/readme_pictures.py", "--help", "test_the_pictures_script_runs_and_every_picture_exists runs it"),
]


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of a README: (language, body), in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def sections(name: str) -> list[tuple[dict[str, str], list[str]]]:
    """A README cut at its folded sections: each part's files (a python or yaml block whose first line is ``# <path>``)
    and its shell commands, a line ending in a backslash joined to the next."""
    parts = []
    for part in re.split(r"^<details>", (REPO / name).read_text(encoding="utf-8"), flags=re.MULTILINE):
        found = blocks(part)
        files = {
            body.splitlines()[0].removeprefix("# "): body
            for lang, body in found
            if lang in ("python", "yaml") and body.startswith("# ")
        }
        lines = "".join(body for lang, body in found if lang == "bash").replace("\\\n", " ").splitlines()
        parts.append((files, [line.strip() for line in lines if line.strip() and not line.startswith("#")]))
    return parts


def project_like(root: Path) -> Path:
    """A directory that reads as the project's root (its files linked), with outputs/ of its own, and ../shared."""
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("outputs", ".git"):
            (root / entry.name).symlink_to(entry)
    (root.parent / "shared").symlink_to(REPO.parent / "shared")
    return root


class Reader:
    """Runs a README's commands as a reader types them, in order, keeping the shell variables they set."""

    def __init__(self, monkeypatch, capfd):
        self.monkeypatch, self.capfd, self.vars, self.outputs = monkeypatch, capfd, {}, {}
        self.seconds = {}

    def words(self, line: str, cwd: Path) -> list[str]:
        """The command's words after bash's expansions (quotes, $(...), $run), its comment dropped."""
        env = {**os.environ, **self.vars, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        script = f"printf '%s\\0' {line}"
        out = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=True)
        return out.stdout.split("\0")[:-1]

    def run(self, line: str, cwd: Path) -> None:
        assignment = re.match(r"^([A-Za-z_]\w*)=(\$\(.*\)|\S+)\s*(#.*)?$", line)
        if assignment:  # run=$(ls -d ... | tail -n 1): a variable for what follows
            (self.vars[assignment[1]],) = self.words(assignment[2], cwd)
            return
        instead = next(((what, why) for piece, what, why in INSTEAD if piece in line), None)
        if instead and instead[0] is None:
            return
        started = time.perf_counter()
        ours = re.search(r"(^|[\s/])deepbasics-(train|evaluate|predict) |-m deepbasics\.train ", line)
        environment = {**os.environ, **self.vars, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        script = re.match(r"^\.venv/bin/python (scripts/\w+\.py)( |$)", line)
        if script and not instead:  # a script's main in this process, as the console scripts run
            proc = self.script(self.words(line, cwd)[1:], cwd)
        elif not (ours or instead):  # printf ... > rows.csv, make lint: bash runs it as printed
            proc = subprocess.run(["bash", "-c", line], cwd=cwd, env=environment, capture_output=True, text=True)
        else:
            proc = self.command(self.words(line, cwd), instead, cwd, environment)
        self.seconds[line] = time.perf_counter() - started
        assert proc.returncode == 0, f"{line}\nexited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        self.outputs[line] = proc.stdout

    def script(self, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
        main = functools.partial(runpy.run_path, argv[0], run_name="__main__")
        return run_main(main, argv, cwd, self.monkeypatch, self.capfd)

    def command(self, words: list[str], instead, cwd: Path, environment: dict) -> subprocess.CompletedProcess:
        """deepbasics' console scripts in this process; a server's or GPUs' command with --help."""
        env = {}
        while re.match(r"^[A-Za-z_]\w*=", words[0]):  # PYTHONPATH=. deepbasics-train ...
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if instead:
            words = [*words, instead[0]]
        if words[:3] == [".venv/bin/python", "-m", "deepbasics.train"]:
            words = ["deepbasics-train", *words[3:]]
        if words[0] == ".venv/bin/python" and words[1].startswith("scripts/"):
            return self.script(words[1:], cwd)
        if Path(words[0]).name not in ENTRY_POINTS:
            return subprocess.run(words, cwd=cwd, env=environment | env, capture_output=True, text=True)
        if "PYTHONPATH" in env:  # the reader's own modules
            self.monkeypatch.syspath_prepend(str(cwd / env["PYTHONPATH"]))
        return run_in_this_process(Path(words[0]).name, words[1:], cwd, self.monkeypatch, self.capfd)


@pytest.mark.slow
@pytest.mark.parametrize("name", READMES)
def test_every_readme_command_runs_as_printed(name, tmp_path, monkeypatch, capfd):
    project, reader = project_like(tmp_path / "project"), Reader(monkeypatch, capfd)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    for number, (files, commands) in enumerate(sections(name)):
        cwd = project
        if files:  # "in an empty directory"
            cwd = tmp_path / f"section-{number}"
            for path, body in files.items():
                (cwd / path).parent.mkdir(parents=True, exist_ok=True)
                (cwd / path).write_text(body)
        for line in commands:
            reader.run(line, cwd)
    for line, seconds in sorted(reader.seconds.items(), key=lambda item: -item[1])[:12]:
        print(f"{seconds:6.1f} s  {line}")  # where the time goes (pytest -s)

    # what the READMEs say the commands give: predict answers as the run's end did, for the same checkpoint
    def answer(fragment: str) -> list:
        (line,) = [line for line in reader.outputs if "deepbasics-predict" in line and fragment in line]
        return json.loads(reader.outputs[line])["predictions"]

    asked = {"README.md": {"logistic_pass_fail": "[[2,2],[5,4]]", "logistic_threshold": "[1,2,3,4,4.5]"},
             "README.ko.md": {"linear_study_hours": "[7.5,10]"}}[name]  # fmt: skip
    for experiment, fragment in asked.items():
        latest = sorted((project / "outputs" / "runs" / experiment).iterdir())[-1]  # the run predict was given
        answered = read_metrics(latest)["question"]["predictions"]
        assert answer(fragment)[: len(answered)] == pytest.approx(answered[: len(answer(fragment))], rel=1e-6)
    if name == "README.ko.md":
        assert len(reader.outputs) >= 15
        return
    assert len(reader.outputs) >= 40, sorted(reader.outputs)
    assert "0.766798" in next(out for line, out in reader.outputs.items() if "experiment=logistic_diabetes" in line)
    (named,) = [out for line, out in reader.outputs.items() if "inputs=rows.csv" in line]
    assert json.loads(named)["predictions"] == answer("[[1,1],[-1,1]]")  # the header row skipped
    sweeps = list((project / "outputs" / "multiruns" / "blobs_mlp").iterdir())
    assert all((sweep / "summary.md").is_file() for sweep in sweeps) and len(sweeps) >= 3
    (own,) = [p for p in tmp_path.iterdir() if p.name.startswith("section-")]
    check_your_own_model_and_data(own, monkeypatch)


def check_your_own_model_and_data(home: Path, monkeypatch) -> None:
    (run,) = sorted((home / "outputs" / "runs" / "circles").iterdir())  # trained, then resumed in place
    metrics = read_metrics(run)
    assert metrics["status"] == "completed" and metrics["epochs"] == 40
    for split in ("train", "val", "test"):
        assert set(metrics[split]) == {"loss", "acc", "auroc"}, split
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "checkpoints").glob("best-epoch*.ckpt"))
    assert "does not hold its splits in memory" in (run / "train.log").read_text()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40 * 8  # 240 rows / 32
    (evaluation,) = (home / "outputs" / "evaluations").glob("*/metrics.json")
    assert json.loads(evaluation.read_text())["test"]["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)

    monkeypatch.syspath_prepend(str(home))
    import deepbasics

    net = deepbasics.load_model(run)
    assert type(net).__name__ == "TanhNet"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[f"net.{k}"]) for k, v in net.state_dict().items())
    (sweep,) = (home / "outputs" / "multiruns" / "circles").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.name[:2].isdigit())
    assert [j.name for j in jobs] == ["00_lr=0.003", "01_lr=0.03"]
    assert all(read_metrics(j)["status"] == "completed" for j in jobs) and (sweep / "summary.md").is_file()
    (stacked,) = (home / "outputs" / "multiruns" / "tanh_blobs").iterdir()
    jobs = sorted(p for p in stacked.iterdir() if p.name[:2].isdigit())
    assert len(jobs) == 4 and all(read_metrics(j)["status"] == "completed" for j in jobs)
    assert not list(jobs[0].glob("train.log")) or "on its own" not in jobs[0].joinpath("train.log").read_text()


def test_the_readmes_link_each_other_and_fold_their_details():
    english, korean = ((REPO / name).read_text(encoding="utf-8") for name in READMES)
    assert "(README.ko.md)" in english.split("\n## ")[0] and "(README.md)" in korean.split("\n## ")[0]
    for text in (english, korean):
        outside, depth = [], 0
        for line in text.splitlines():
            depth += line.startswith("<details>")
            outside += [line] if depth == 0 else []
            depth -= line.startswith("</details>")
        assert depth == 0 and len(outside) <= 150, len(outside)


@pytest.mark.slow
def test_the_pictures_script_runs_and_every_picture_exists(tmp_path, monkeypatch):
    shown = {
        src
        for name in READMES
        for src in re.findall(r'<img src="([^"]+)"|!\[[^]]*\]\(([^)]+)\)', (REPO / name).read_text(encoding="utf-8"))
        for src in src
        if src
    }
    assert len(shown) >= 4
    for picture in shown:
        with Image.open(REPO / picture) as image:
            assert image.format == "PNG" and min(image.size) >= 300, picture
    spec = importlib.util.spec_from_file_location("readme_pictures", REPO / "scripts" / "readme_pictures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    out = script.main(["--out", str(tmp_path / "pictures"), "--epochs", "100"])
    assert sorted(p.name for p in out.iterdir()) == sorted(script.PICTURES)
    assert {Path(picture).name for picture in shown} <= set(script.PICTURES)
    for picture in out.iterdir():
        with Image.open(picture) as image:
            assert image.format == "PNG" and len(set(image.getdata())) > 50, picture  # drawn, not blank


@pytest.mark.slow
def test_a_run_on_your_datamodule_killed_and_resumed_ends_as_one_never_stopped(tmp_path, monkeypatch, capfd):
    (files,) = [files for files, _ in sections("README.md") if files]
    assert {"mynets.py", "mydata.py", "conf/model/tanh.yaml", "conf/data/circles.yaml"} <= set(files)
    for path, body in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    args = ["--config-dir", "conf", "data=circles", "model=tanh", "name=circles", "epochs=30", "val_every=10"]
    env = {**os.environ, "PYTHONPATH": ".", "PYTHONWARNINGS": "ignore"}
    stop_at = REPO / "tests" / "run" / "stop_at.py"
    killed = subprocess.run(
        [sys.executable, str(stop_at), "kill", "25", *args], cwd=tmp_path, env=env, capture_output=True
    )
    assert killed.returncode == -9
    (run,) = sorted((tmp_path / "outputs" / "runs" / "circles").iterdir())
    assert not (run / "metrics.json").exists()
    # the killed run finished as the user types it, then the same run never stopped (in this process)
    resumed = subprocess.run(
        [str(BIN / "deepbasics-train"), *args, "resume=auto"], cwd=tmp_path, env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run_in_this_process("deepbasics-train", args, tmp_path, monkeypatch, capfd).returncode == 0
    first, second = sorted((tmp_path / "outputs" / "runs" / "circles").iterdir())
    assert first == run
    ends = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (first, second)]
    assert ends[0]["global_step"] == ends[1]["global_step"] == 30 * 8
    for name, value in ends[1]["state_dict"].items():
        assert torch.equal(ends[0]["state_dict"][name], value), name
    assert {s: read_metrics(first)[s] for s in ("train", "val", "test")} == {
        s: read_metrics(second)[s] for s in ("train", "val", "test")
    }
