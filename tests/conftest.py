"""Shared fixtures: tiny datasets in the real GTA5 and Cityscapes layouts."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.config import DataConfig, DatasetSpec, load_params
from pipeline.data.demo import DemoSpec, generate
from pipeline.data.prepare import prepare_all

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The settings tests run with (not the working tree's params.yaml, which a team edits).
TEST_PARAMS = REPO_ROOT / "tests" / "params.yaml"


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path_factory, monkeypatch):
    """Every test logs to its own SQLite store unless it sets MLFLOW_TRACKING_URI itself."""
    if "MLFLOW_TRACKING_URI" not in os.environ:
        store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    # Two test workers share the two cores: more threads per worker only wait on each other.
    torch.set_num_threads(1)


def write_image(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def write_palette_label(path: Path, ids: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="L").convert("P")
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    image.save(path)
    return path


def write_png16(path: Path, array: np.ndarray) -> Path:
    """Write (H, W) or (H, W, C) integers as a 16-bit-per-sample PNG (grey, RGB or RGBA).

    Encoded here from the PNG specification, independently of the decoders under test, so the
    channel order on disk is exactly the array's.
    """
    array = np.asarray(array, dtype=np.uint16)
    if array.ndim == 2:
        array = array[..., None]
    height, width, channels = array.shape
    colour_type = {1: 0, 3: 2, 4: 6}[channels]  # grey, RGB, RGBA

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    # Each row: filter type 0 (none), then big-endian 16-bit samples.
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def random_frame(
    rng: np.random.Generator, h: int = 24, w: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # Cityscapes label ids of train classes (7 road, 8 sidewalk, 11 building, 26 car) and 0.
    ids = rng.choice(np.array([0, 7, 8, 11, 26], dtype=np.uint8), size=(h, w))
    return image, ids


def tiny_workspace(root: Path, spec: DemoSpec, overrides: dict) -> Path:
    """A working folder as the stages expect it: demo data, prepared splits, a tiny params.yaml."""
    generate(spec, root / "demo")
    data = DataConfig(
        source=DatasetSpec("gta5", str(root / "demo" / "gta5")),
        target=DatasetSpec("cityscapes", str(root / "demo" / "cityscapes")),
        size=spec.size,
        max_skipped=0,
        max_unknown_share=0.0,
        val_label_size=None,
    )
    prepare_all(data, 1, root / "data" / "prepared", root / "data.json")
    params = yaml.safe_load(TEST_PARAMS.read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def params_section(section: str, **overrides: Any) -> Any:
    """tests/params.yaml's `section`, with `overrides` applied."""
    return dataclasses.replace(getattr(load_params(TEST_PARAMS), section), **overrides)


# What a checkout holds that the stages need, for tests that run the real chain in a temp repo.
REPO_FILES = (
    "pipeline",
    "stages",
    "profiles",
    "label_maps",
    "dvc.yaml",
    "pyproject.toml",
    "README.md",
    ".dvcignore",
    ".gitignore",
    "reports/seeds.json",
)


def temp_checkout(root: Path, params: dict) -> dict[str, str]:
    """`root` as a fresh git + DVC checkout of the project's code with `params` as its
    params.yaml, committed; returns the environment its commands run in (this venv first on
    PATH, the store at the repo root)."""
    for name in REPO_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the default: SQLite at the repo root
    for command in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return env


@pytest.fixture(scope="module")
def profile_repo(tmp_path_factory):
    """A checkout for README's profile commands (tests/readme_profiles.py), one per test file."""
    from tests.readme_profiles import profile_checkout

    return profile_checkout(tmp_path_factory)
