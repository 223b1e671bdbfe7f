"""README's real-data profile command, run as a team copies it, on tiny frames in the real layouts.

The command (`python -m pipeline.cli.profile --profile profiles/gta5_cityscapes.yaml -S ROOTS |
xargs dvc exp run ...`) runs in a temp repo exactly as written, with the two roots pointed at
generated GTA5- and Cityscapes-layout folders outside data/demo and the user's own `-S`
overrides (iterations, sizes, a small MiT encoder with its weights file) added to the profile
command as README says. It checks that the profile and the overrides both reach params.yaml and
the runs (a setting DVC writes as `6e-05` is read as a number; `-S cyclegan.iters=2` beats the
profile's 199728), that the chain runs through `report`, and that a weights file of another
encoder stops the run at `check_params` in one line with every output of the previous run
still there.
"""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline.config import load_params
from tests.readme_profiles import (
    ENCODER_OVERRIDES,
    USER_OVERRIDES,
    readme_profile_commands,
    run,
    with_user_settings,
)

pytestmark = pytest.mark.slow


def test_the_real_data_profile_runs_as_readme_writes_it(profile_repo):
    root, env, roots = profile_repo
    real = readme_profile_commands()[0]
    assert "profiles/gta5_cityscapes.yaml" in real and "/data/gta5" in real
    run(with_user_settings(real, roots, USER_OVERRIDES + ENCODER_OVERRIDES), root, env)
    # `dvc exp run` leaves the experiment's params and outputs in the workspace.
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert re.search(r"^\s+lr: 6e-05$", (root / "params.yaml").read_text(), flags=re.M)
    checked = load_params(root / "params.yaml")
    assert checked.train_seg.lr == pytest.approx(6e-05)  # DVC's YAML 1.2 float, read as one
    assert checked.cyclegan.iters == 2 and checked.cyclegan.netG == "resnet_9blocks"
    assert checked.train_seg.encoder == "mit_b0" and checked.train_seg.arch == "Segformer"
    assert params["data"]["source"]["root"] == str(roots["/data/gta5"])
    # The user's iterations, not the profile's, were trained.
    losses = (root / "reports/cyclegan_losses.csv").read_text().splitlines()
    assert max(int(line.split(",")[0]) for line in losses[1:]) <= 2
    for variant in checked.train_seg.variants:
        assert (root / f"models/seg/{variant}/model.safetensors").is_file(), variant
        assert (root / f"reports/metrics/{variant}.json").is_file(), variant
    assert (root / "reports/comparison.md").is_file()
    # No demo frames were made for a run on the team's own data.
    assert sorted(p.name for p in (root / "data/demo").iterdir()) == ["UNUSED.txt"]
    # tracking.log_models false (the profile): the runs name the model, MLflow holds no copy.
    assert not any((root / "mlruns").rglob("model.safetensors"))


def test_a_weights_file_of_another_encoder_stops_at_check_params_and_deletes_nothing(profile_repo):
    root, env, _ = profile_repo
    model = root / "models/seg/source_only/model.safetensors"
    log = root / "logs/train_seg_source_only.log"
    before = {path: path.read_bytes() for path in (model, log)}
    # Through the profile command: refused before DVC rewrites params.yaml.
    profile = run(
        "python -m pipeline.cli.profile --profile profiles/gta5_cityscapes.yaml "
        "-S train_seg.encoder=mit_b0 -S train_seg.encoder_weights=weights/r18.pth",
        root,
        env,
        ok=False,
    )
    assert profile.returncode == 2 and profile.stdout == ""
    assert profile.stderr.count("\n") == 1, profile.stderr
    assert "weights/r18.pth: not a state dict for this encoder (mit_b0)" in profile.stderr
    # Straight to `dvc repro`: check_params stops it before any stage deletes its outputs.
    params = root / "params.yaml"
    good = params.read_text()
    params.write_text(good.replace("weights/mit_b0.pth", "weights/r18.pth"))
    try:
        repro = run("dvc repro", root, env, ok=False)
    finally:
        params.write_text(good)
    assert repro.returncode != 0
    named = [line for line in repro.stderr.splitlines() if "weights/r18.pth" in line]
    assert len(named) == 1 and named[0].startswith("check_params: "), repro.stderr
    assert "Traceback" not in repro.stderr
    assert {path: path.read_bytes() for path in (model, log)} == before
