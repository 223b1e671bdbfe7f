"""A fresh checkout regenerates the demo data and the prepared splits bit for bit: `dvc repro
demo_data prepare` gives exactly the hashes the committed dvc.lock records for those two stages
(with the package versions of requirements.lock, which scripts/install.sh installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

STAGES = ("demo_data", "prepare")


def test_demo_data_and_prepare_reproduce_the_committed_dvc_lock(tmp_path: Path) -> None:
    for name in ("pipeline", "stages", "label_maps"):
        shutil.copytree(
            REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(tmp_path),
        "DVC_NO_ANALYTICS": "1",
    }
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", *STAGES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    committed = yaml.safe_load((REPO_ROOT / "dvc.lock").read_text())["stages"]
    regenerated = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    for stage in STAGES:
        assert regenerated[stage] == committed[stage], (
            f"{stage}: a fresh `dvc repro {stage}` does not reproduce dvc.lock; after a change "
            f"to its code, settings or requirements.lock, rerun it and commit dvc.lock"
        )
