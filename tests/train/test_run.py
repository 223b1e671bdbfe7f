"""The run layer on a toy loop: exact resume, interval means, the non-finite guard, signals, and
the stage door (checkpoint-folder claim, MLflow run status, run.json)."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.tracking.base import NullTracker
from pipeline.train.checkpoint import CheckpointError, list_checkpoints
from pipeline.train.run import Interrupted, Run, RunSpec, TrainingDiverged

CPU = torch.device("cpu")


class Recorder(NullTracker):
    def __init__(self) -> None:
        self.metrics: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics[step] = dict(metrics)


def toy(
    folder: Path,
    iters: int = 10,
    log_every: int = 2,
    checkpoint_every: int = 3,
    max_bad_steps: int = 0,
    bad: tuple[int, ...] = (),
    crash_at: int | None = None,
    signal_at: int | None = None,
    tracker=None,
    settings: dict | None = None,
):
    """Linear regression by hand-written SGD under a Run; returns (summary, weights, losses).

    `bad` steps (0-based) get a NaN loss and skip their update; `crash_at` raises in that step's
    body; `signal_at` sends SIGTERM from inside it.
    """
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    run = Run(
        RunSpec(
            name="toy",
            folder=folder / "checkpoints",
            settings=settings or {"lr": 0.1},
            iters=iters,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            seed=0,
            images_per_step=4,
            curves=folder / "curves.csv",
            max_bad_steps=max_bad_steps,
        ),
        tracker or NullTracker(),
        CPU,
    )
    noise = run.generator("noise")
    run.hold(model=model)
    run.resume()
    losses = {}
    for step in run:
        x = torch.randn(4, 3)  # global RNG: restored per rank by the run
        y = x.sum(dim=1) + 0.1 * torch.randn(4, generator=noise)
        loss = F.mse_loss(model(x).squeeze(1), y)
        if step in bad:
            loss = loss * float("nan")
        model.zero_grad()
        loss.backward()
        ok = torch.isfinite(loss)
        with torch.no_grad():
            for p in model.parameters():
                p -= torch.where(ok, 0.1 * p.grad, torch.zeros_like(p))
        losses[step] = loss.item()
        run.log({"loss": loss, "twice": 2 * loss}, ok, lr=0.1)
        if step == crash_at:
            raise RuntimeError("power cut")
        if step == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
    return run.finish(), {k: v.clone() for k, v in model.state_dict().items()}, losses


def test_crash_and_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    whole, whole_weights, _ = toy(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="power cut"):
        toy(tmp_path / "pieces", crash_at=7)  # steps 7 and 8 (1-based) are lost
    assert [p.name for p in list_checkpoints(tmp_path / "pieces/checkpoints")] == [
        "step_00000003.pt",
        "step_00000006.pt",
    ]
    pieces, pieces_weights, _ = toy(tmp_path / "pieces")
    assert pieces["resumed_from"] == 6 and pieces["steps"] == whole["steps"] == 10
    for name in whole_weights:
        assert torch.equal(whole_weights[name], pieces_weights[name])
    assert (tmp_path / "whole/curves.csv").read_text() == (
        tmp_path / "pieces/curves.csv"
    ).read_text()
    assert pieces["loss"] == whole["loss"]
    # A finished run keeps one checkpoint.
    assert [p.name for p in list_checkpoints(tmp_path / "whole/checkpoints")] == [
        "step_00000010.pt"
    ]


def test_interval_means_are_logged_and_kept_as_curves(tmp_path) -> None:
    recorder = Recorder()
    summary, _, losses = toy(tmp_path, iters=5, log_every=2, tracker=recorder)
    assert sorted(recorder.metrics) == [2, 4, 5]  # every log_every steps and the last
    assert recorder.metrics[2]["loss"] == pytest.approx((losses[0] + losses[1]) / 2)
    assert recorder.metrics[4]["twice"] == pytest.approx(losses[2] + losses[3])
    assert recorder.metrics[5]["loss"] == pytest.approx(losses[4])
    assert all(m["img_per_s"] > 0 and m["lr"] == 0.1 for m in recorder.metrics.values())
    with open(tmp_path / "curves.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "loss", "twice", "lr"]
    assert [int(r["step"]) for r in rows] == [2, 4, 5]
    assert float(rows[1]["loss"]) == pytest.approx(recorder.metrics[4]["loss"], rel=1e-5)
    assert summary["steps"] == 5 and summary["loss"] == pytest.approx(losses[4], rel=1e-5)
    assert summary["img_per_s"] > 0


def test_bad_steps_are_skipped_and_left_out_of_the_means(tmp_path) -> None:
    recorder = Recorder()
    _, weights, losses = toy(tmp_path, iters=6, bad=(2,), max_bad_steps=1, tracker=recorder)
    assert recorder.metrics[4]["loss"] == pytest.approx(losses[3])  # step 3 (1-based) left out
    _, clean, _ = toy(tmp_path / "clean", iters=6)
    assert not torch.equal(weights["weight"], clean["weight"])  # one update fewer
    assert all(torch.isfinite(v).all() for v in weights.values())


@pytest.mark.parametrize(("max_bad_steps", "stops_at", "kept"), [(0, 4, 3), (1, 5, 3)])
def test_too_many_bad_steps_in_a_row_stop_without_saving(
    tmp_path, max_bad_steps, stops_at, kept
) -> None:
    # Steps 4 and 5 (1-based) are bad; the guard trips at the (max_bad_steps + 1)-th in a row,
    # noticed at the next logging step, and names the step it tripped at.
    with pytest.raises(TrainingDiverged, match=f"toy step {stops_at}:") as error:
        toy(tmp_path, iters=10, log_every=3, bad=(3, 4), max_bad_steps=max_bad_steps)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == f"step_{kept:08d}.pt" and str(newest) in str(error.value)


def test_a_signal_saves_at_that_step_and_restores_the_handlers(tmp_path) -> None:
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM at step 5") as stopped:
        toy(tmp_path, signal_at=4)
    assert stopped.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is handler
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == "step_00000005.pt"
    summary, _, _ = toy(tmp_path)
    assert summary["resumed_from"] == 5 and summary["steps"] == 10


def test_a_checkpoint_of_other_settings_is_refused(tmp_path) -> None:
    toy(tmp_path, iters=3)
    with pytest.raises(CheckpointError, match=r"lr: 0.1 -> 0.2"):
        toy(tmp_path, iters=3, settings={"lr": 0.2})
