"""--help and config mistakes answer without loading torch or Lightning (so they answer fast)."""

import subprocess
import sys


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deepbasics.train", *args], capture_output=True, text=True
    )
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc, names


def test_help_does_not_import_torch():
    proc, names = imported_modules("--help")
    assert proc.returncode == 0 and "== Config ==" in proc.stdout and "experiment:" in proc.stdout
    assert "hydra" in names and "torch" not in names and "lightning" not in names


def test_config_mistake_does_not_import_torch(tmp_path):
    proc, names = imported_modules("epoks=10", f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2 and "error: unknown config key 'epoks'" in proc.stderr
    assert "torch" not in names
    assert not (tmp_path / "runs").exists(), "a rejected command leaves no run directory behind"


def test_evaluate_and_predict_have_help_pages_of_their_own(tmp_path):
    """Their --help: a usage line, their keys and (predict) the inputs format, not the training groups;
    through their module forms (python -m deepbasics.evaluate|predict), without torch."""
    for command, keys in {"evaluate": ("ckpt_path", "split", "data.path"), "predict": ("ckpt_path", "inputs")}.items():
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", f"deepbasics.{command}", "--help"],
            capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert proc.returncode == 0 and "torch" not in names, proc.stderr[-2000:]
        page = proc.stdout
        assert f"Usage:\n  deepbasics-{command} ckpt_path=<run dir or .ckpt>" in page, page
        assert all(f"\n  {key} " in page for key in keys), page
        assert "experiment" not in page and "== Config ==" not in page and "trainer" not in page
    assert "'inputs=[[2,2],[5,4]]'" in page and "inputs=rows.csv" in page


def test_module_forms_answer_as_the_console_scripts(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "deepbasics.evaluate", "ckpt_path=nope.ckpt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: ckpt_path=nope.ckpt: no such file; pass a .ckpt from a run's checkpoints/ directory\n"
    assert not (tmp_path / "outputs" / "evaluations").exists(), "a refused evaluation leaves no directory"


def test_a_printed_command_names_the_script_as_it_was_started(monkeypatch, tmp_path):
    from deepbasics.errors import command_as_typed

    script = tmp_path / "venv" / "bin" / "deepbasics-train"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["venv/bin/deepbasics-train", "experiment=blobs_mlp"])
    assert command_as_typed() == "venv/bin/deepbasics-train"  # the path typed, which runs from here
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert command_as_typed() == str(script)  # not on PATH: the bare name would not run
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert command_as_typed() == "deepbasics-train"  # PATH finds this very file
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "src" / "deepbasics" / "train.py")])
    assert command_as_typed().endswith(" -m deepbasics.train")
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    assert command_as_typed() == "deepbasics-train"  # called from Python: the console script's name
