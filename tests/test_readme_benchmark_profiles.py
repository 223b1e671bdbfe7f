"""README's benchmark profile commands (one seed of the benchmark; the method variants after it),
run as written on tiny frames, with the user's own `-S` settings on the profile command."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.config import load_params
from tests.readme_profiles import (
    USER_OVERRIDES,
    readme_profile_commands,
    run,
    with_user_settings,
)

pytestmark = pytest.mark.slow


def test_the_benchmark_profiles_run_as_readme_writes_them(profile_repo):
    """The benchmark's seed-1 command, then the methods command with the same seeds as a user's
    overrides: DVC reruns only the two method variants the second profile adds."""
    root, env, roots = profile_repo
    _, benchmark, methods = readme_profile_commands()
    assert "profiles/benchmark.yaml" in benchmark and "-S train_seg.seed=1" in benchmark
    assert "profiles/benchmark.yaml --profile profiles/benchmark_methods.yaml" in methods
    # No MLflow here (the end-to-end test covers it): each stage starts faster.
    extra = [*USER_OVERRIDES, "train_seg.val_every=2", "tracking.enabled=false"]
    run(with_user_settings(benchmark, roots, extra), root, env)
    checked = load_params(root / "params.yaml")
    assert (checked.train_seg.iters, checked.cyclegan.iters, checked.cut.iters) == (2, 2, 2)
    assert checked.train_seg.seed == 1  # README's seed, on the profile command, won
    assert {"cut", "fastcut"} <= set(checked.train_seg.variants)
    for variant in checked.train_seg.variants:
        scores = json.loads((root / f"reports/metrics/{variant}.json").read_text())
        assert 0 <= scores["miou"] <= 1, variant
    assert "| cut |" in (root / "reports/comparison.md").read_text()

    seeds = ["cyclegan.seed=1", "cut.seed=1", "train_seg.seed=1"]
    methods_run = run(with_user_settings(methods, roots, [*extra, *seeds]), root, env)
    trained = set(re.findall(r"Running stage '(train_seg@\w+)'", methods_run.stdout))
    assert trained == {"train_seg@cyclegan_mic", "train_seg@cyclegan_st_warm"}, trained
    checked = load_params(root / "params.yaml")
    assert checked.train_seg.variants["cyclegan_mic"].step == "mic"
    for variant in ("cyclegan_mic", "cyclegan_st_warm"):
        scores = json.loads((root / f"reports/metrics/{variant}.json").read_text())
        assert 0 <= scores["miou"] <= 1, variant
    names = run("dvc exp list --name-only", root, env).stdout.split()
    assert {"benchmark-seed1", "methods-seed0"} <= set(names)
