"""The docs' profile commands as a team runs them: the commands, the user's settings a test adds
to them, and a temp checkout with tiny data in the real layouts (tests/test_readme_*.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import yaml

from pipeline.data.demo import DemoSpec, generate
from tests.conftest import TEST_PARAMS, temp_checkout
from tests.doc_pages import docs_text

# What a team with tiny data would add: frames, crops and schedules a CPU runs in seconds, a
# MiT-B0 in place of the profile's MiT-B5 (same code path, 1/25 of the weights).
USER_OVERRIDES = [
    "data.size=[64,128]",
    "demo_data.n_source=8",
    "demo_data.n_target_train=8",
    "demo_data.n_target_val=4",
    "demo_data.size=[64,128]",
    "prepare.workers=1",
    "cyclegan.crop=[32,32]",
    "cyclegan.iters=2",
    "cyclegan.decay_from=1",
    "cyclegan.checkpoint_every=1",
    "cyclegan.log_every=1",
    "cyclegan.sample_every=1",
    "cyclegan.threads=1",
    "cut.crop=[32,32]",
    "cut.iters=2",
    "cut.decay_from=1",
    "cut.num_patches=16",
    "cut.checkpoint_every=1",
    "cut.log_every=1",
    "cut.sample_every=1",
    "translate.batch=4",
    "translate.workers=1",
    "translate.threads=1",
    "train_seg.crop=[32,32]",
    "train_seg.iters=2",
    "train_seg.batch=4",  # self-training halves it: 2 source + 2 mixed frames
    "train_seg.checkpoint_every=1",
    "train_seg.log_every=1",
    "train_seg.threads=1",
    "evaluate.batch=4",
    "report.n_samples=2",
]
# Only for the real-data profile, whose encoder needs a weights file.
ENCODER_OVERRIDES = ["train_seg.encoder=mit_b0", "train_seg.encoder_weights=weights/mit_b0.pth"]


def readme_profile_commands() -> list[str]:
    """The docs' shell blocks that run a profile, each as one line (continuations joined)."""
    readme = docs_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    commands = [" ".join(b.replace("\\\n", " ").split()) for b in blocks if "cli.profile" in b]
    assert len(commands) == 3, commands
    return commands


def with_user_settings(command: str, roots: dict[str, Path], extra: list[str]) -> str:
    """`command` with the docs' placeholder roots replaced by `roots` and `extra` -S settings
    added to the profile command, where the docs tell a team to put its own."""
    for placeholder, root in roots.items():
        command = command.replace(placeholder, str(root))
    profile, pipe, run = command.partition(" | ")
    assert pipe and run.startswith("xargs dvc exp run"), command
    return f"{profile} {' '.join(f'-S {s}' for s in extra)} | {run}"


def run(command: str, cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if ok:
        assert result.returncode == 0, (
            f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def profile_checkout(tmp_path_factory) -> tuple[Path, dict, dict[str, Path]]:
    """A temp checkout with tests/params.yaml, a team's tiny data in the real layouts outside
    data/demo (the docs' placeholder roots -> those folders), and two encoder weights files."""
    root = tmp_path_factory.mktemp("repo")
    env = temp_checkout(root, yaml.safe_load(TEST_PARAMS.read_text()))
    # A team's data: the real layouts, outside the demo folder.
    datasets = tmp_path_factory.mktemp("datasets")
    spec = DemoSpec(seed=3, n_source=8, n_target_train=8, n_target_val=4, size=(64, 128))
    generate(spec, datasets)
    (root / "weights").mkdir()
    for encoder, file in (("mit_b0", "mit_b0.pth"), ("resnet18", "r18.pth")):
        state = smp.encoders.get_encoder(encoder, weights=None).state_dict()
        torch.save(state, root / "weights" / file)
    roots = {"/data/gta5": datasets / "gta5", "/data/cityscapes": datasets / "cityscapes"}
    return root, env, roots
