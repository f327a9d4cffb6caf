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
