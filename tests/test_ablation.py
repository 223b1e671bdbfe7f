"""The ablation page from DVC experiment rows, and the queued commands."""

from __future__ import annotations

import json
import subprocess

import pytest

from pipeline import ablation


def test_queue_commands_name_each_ablation_and_its_overrides():
    commands = {c[c.index("-n") + 1]: c for c in ablation.queue_commands()}
    assert set(commands) == set(ablation.ABLATIONS)
    gan_only = commands["gan-only"]
    assert gan_only[gan_only.index("-S") + 1] == "cyclegan.lambda_cycle=0"
    assert "--queue" in gan_only


def test_markdown_takes_baseline_and_named_experiments_with_either_column_style():
    rows = [
        {
            "Experiment": None,
            "typ": "baseline",
            "reports/translators/cyclegan/scores.json:translated.miou": 0.257,
            "metrics/cyclegan.json:miou": 0.187,
            "pixel_accuracy": 0.495,
            "hist_distance_after": 0.5379,
            "metrics/source_only.json:miou": 0.09,
        },
        {
            "Experiment": "gan-only",
            "typ": "branch_commit",
            "reports/translators/cyclegan/scores.json:translated.miou": 0.05,
            "metrics/cyclegan.json:miou": 0.06,
        },
        {"Experiment": "unrelated", "typ": "branch_commit"},
    ]
    page = ablation.ablation_markdown(rows)
    assert (
        "| baseline | params.yaml as committed | 0.538 | 25.7 | n/a | 18.7 | 49.5 | 9.0 |" in page
    )
    assert "| gan-only | cyclegan.lambda_cycle=0 | n/a | 5.0 | n/a | 6.0 | n/a | n/a |" in page
    assert "unrelated" not in page


def test_markdown_reads_translation_scores_from_the_experiment_commit(tmp_path, monkeypatch):
    # exp_show has no column for the translation scores (stage outputs, not DVC metrics): the
    # page reads them from the experiment's commit, and from disk for the workspace.
    monkeypatch.chdir(tmp_path)
    scores = tmp_path / "reports" / "translators" / "cyclegan" / "scores.json"
    scores.parent.mkdir(parents=True)
    scores.write_text(json.dumps({"translated": {"miou": 0.05, "pixel_accuracy": 0.2}}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "gan-only"], check=True)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    scores.write_text(json.dumps({"translated": {"miou": 0.3, "pixel_accuracy": None}}))
    rows = [
        {"Experiment": None, "typ": "baseline", "rev": "workspace"},
        {"Experiment": "gan-only", "typ": "branch_commit", "rev": rev},
    ]
    page = ablation.ablation_markdown(rows)
    assert "| baseline | params.yaml as committed | n/a | 30.0 | n/a | n/a | n/a | n/a |" in page
    assert "| gan-only | cyclegan.lambda_cycle=0 | n/a | 5.0 | 20.0 | n/a | n/a | n/a |" in page


def test_seed_spread_per_variant_from_baseline_and_seed_runs():
    rows = [
        {"typ": "baseline", "metrics/cyclegan.json:miou": 0.30, "pixel_accuracy": 0.7},
        {"Experiment": "seed-1", "metrics/cyclegan.json:miou": 0.26},
        {"Experiment": "seed-2", "metrics/cyclegan.json:miou": 0.33},
        {"Experiment": "gan-only", "metrics/cyclegan.json:miou": 0.01},
    ]
    spread = ablation.seed_spread(rows, ["cyclegan"])
    assert spread["runs"] == ["baseline", "seed-1", "seed-2"]
    entry = spread["variants"]["cyclegan"]
    assert entry["miou"] == [0.30, 0.26, 0.33]
    assert entry["miou_spread"] == pytest.approx(0.07)
    assert entry["pixel_accuracy_spread"] is None  # measured in one run only
    commands = ablation.queue_commands(ablation.SEEDS)
    assert [c[c.index("-n") + 1] for c in commands] == ["seed-1", "seed-2"]
