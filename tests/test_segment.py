"""A trained variant's model folder segments frames of any size as evaluation does; the folder
command writes masks and overlays, resumes, and refuses what it must not overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.cli.segment import main
from pipeline.data.labels import NUM_CLASSES, TRAIN_ID_TO_COLOR
from pipeline.evaluate import evaluate_images
from pipeline.io import read_rgb, resize_rgb
from pipeline.models.model_folder import MODEL_SPEC, model_spec, write_model
from pipeline.models.segmentation import build_segmentation_model
from pipeline.segment import (
    OUTPUT_MARKER,
    Inference,
    Segmenter,
    SegmentError,
    logits_of,
    overlay,
    segment_folder,
    window_starts,
)

WORKING = (32, 64)
CPU = torch.device("cpu")


def _model_folder(root: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_segmentation_model("FPN", "resnet18", NUM_CLASSES)
    write_model(root, model.eval(), model_spec("FPN", "resnet18", WORKING))
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _model_folder(tmp_path_factory.mktemp("model"), seed=0)


def _frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_model_json_packages_input_size_normalisation_and_classes(model_dir) -> None:
    spec = json.loads((model_dir / MODEL_SPEC).read_text())
    assert spec["input_size"] == list(WORKING) and len(spec["mean"]) == len(spec["std"]) == 3
    assert [c["train_id"] for c in spec["classes"]] == list(range(NUM_CLASSES))
    assert spec["classes"][0]["name"] == "road" and spec["classes"][0]["color"] == [128, 64, 128]


def test_a_native_frame_is_segmented_exactly_as_evaluation_scores_it(model_dir) -> None:
    frames = _frames(3, 64, 128)
    segmenter = Segmenter.from_folder(model_dir)
    # Evaluation: the prepared (working-size) frame through the net, logits to label size.
    working = np.stack([resize_rgb(frame, WORKING) for frame in frames])
    labels = np.zeros((3, 64, 128), dtype=np.uint8)
    evaluation = evaluate_images(segmenter.model, working, labels, 2, "fp32", CPU, keep=3)
    assert np.array_equal(segmenter.predict(frames), evaluation.predictions)


@pytest.mark.parametrize("size", [(256, 512), (37, 61)])
def test_any_frame_size_gives_train_ids_at_that_size(model_dir, size) -> None:
    ids = Segmenter.from_folder(model_dir).predict(_frames(2, *size))
    assert ids.shape == (2, *size) and ids.dtype == np.uint8
    assert ids.max() < NUM_CLASSES
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        Segmenter.from_folder(model_dir).predict(_frames(1, 8, 8)[0])


def test_overlay_blends_the_class_colour() -> None:
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    ids = np.array([[0, 1], [2, 10]], dtype=np.uint8)
    blended = overlay(image, ids)
    expected = np.rint(0.5 * 200 + 0.5 * TRAIN_ID_TO_COLOR[ids].astype(np.float64))
    assert np.array_equal(blended, expected.astype(np.uint8))


def _write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    folder.mkdir()
    sizes = {"a": (40, 60), "b": (40, 60), "c": (33, 47)}
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        Image.fromarray(_frames(1, h, w, seed=i)[0]).save(folder / f"{stem}.png")
    return sizes


def test_folder_writes_masks_and_overlays_and_resumes(model_dir, tmp_path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    sizes = _write_inputs(inputs)
    segmenter = Segmenter.from_folder(model_dir)
    result = segment_folder(segmenter, model_dir, inputs, out, batch=4)
    assert result["files"] == 3 and result["segmented"] == 3
    for stem, size in sizes.items():
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        image = read_rgb(inputs / f"{stem}.png")
        assert mask.shape == size and mask.dtype == np.uint8
        assert np.array_equal(mask, segmenter.predict(image[None])[0])
        assert np.array_equal(read_rgb(out / "overlays" / f"{stem}.png"), overlay(image, mask))
    before = (out / "masks" / "a.png").stat().st_mtime_ns
    (out / "masks" / "c.png").unlink()
    again = segment_folder(segmenter, model_dir, inputs, out, batch=4)
    assert again["segmented"] == 1 and (out / "masks" / "c.png").is_file()
    assert (out / "masks" / "a.png").stat().st_mtime_ns == before
    assert not list(out.rglob("*.tmp"))


def test_another_models_output_folder_is_refused_and_kept(model_dir, tmp_path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _write_inputs(inputs)
    segment_folder(Segmenter.from_folder(model_dir), model_dir, inputs, out, batch=2)
    masks = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    other = _model_folder(tmp_path / "other", seed=1)
    with pytest.raises(SegmentError, match=rf"{OUTPUT_MARKER}.*another --output"):
        segment_folder(Segmenter.from_folder(other), other, inputs, out, batch=2)
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == masks


def test_command_names_the_bad_file_and_keeps_finished_frames(model_dir, tmp_path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    _write_inputs(inputs)
    (inputs / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["--model", str(model_dir), "--input", str(inputs), "--output", str(out)]
    with pytest.raises(SystemExit, match=r"z\.png: unreadable image"):
        main([*args, "--precision", "fp32", "--batch", "1"])
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png", "c.png"]
    with pytest.raises(SystemExit, match=r"nowhere.*model\.json: not found"):
        main(["--model", str(tmp_path / "nowhere"), "--input", str(inputs), "--output", "x"])


def test_window_grid_is_mmsegs_last_window_shifted_inside_the_frame() -> None:
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]  # the last one ends at the edge
    assert window_starts(10, 16, 8) == [0]  # a window wider than the frame: the frame
    assert window_starts(1024, 1024, 512) == [0]
    assert window_starts(2048, 1024, 512) == [0, 512, 1024]  # HRDA / MIC at 1024x2048


class _CropMean(nn.Module):
    """Logits that depend on the whole input: every pixel gets its crop's mean, per channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


def test_sliding_windows_average_each_windows_logits_where_they_overlap() -> None:
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    got = logits_of(_CropMean(), x, Inference((4, 4), (4, 2)))
    # Windows at columns 0-3 and 2-5 (stride 2, the second the last): columns 2-3 average both.
    left, right = x[..., 0:4].mean(dim=(2, 3)), x[..., 2:6].mean(dim=(2, 3))  # (B, 1)
    expected = torch.empty_like(x)
    expected[..., 0:2] = left[..., None, None]
    expected[..., 2:4] = ((left + right) / 2)[..., None, None]
    expected[..., 4:6] = right[..., None, None]
    assert torch.equal(got, expected)
    # A window covering the frame is the whole frame, exactly.
    assert torch.equal(logits_of(_CropMean(), x, Inference((32, 32), (16, 16))), _CropMean()(x))


def test_a_pointwise_net_scores_the_same_whole_or_in_windows(model_dir) -> None:
    """A net whose logits depend on each pixel alone gives the whole frame's logits from any
    windows; evaluation and the segment command take the same inference."""
    torch.manual_seed(0)
    pointwise = nn.Conv2d(3, NUM_CLASSES, 1)
    x = torch.randn(2, 3, 64, 96)
    whole = logits_of(pointwise, x)
    for window, stride in (((32, 32), (32, 32)), ((64, 64), (32, 16)), ((32, 64), (16, 32))):
        assert torch.allclose(logits_of(pointwise, x, Inference(window, stride)), whole, atol=1e-6)
    frames = _frames(3, *WORKING)
    labels = np.zeros((3, *WORKING), dtype=np.uint8)
    windows = Inference((32, 32), (32, 16))
    segmenter = Segmenter.from_folder(model_dir, CPU, inference=windows)
    scored = evaluate_images(
        segmenter.model, frames, labels, 2, "fp32", CPU, keep=3, inference=windows
    )
    assert np.array_equal(scored.predictions, segmenter.predict(frames))


def test_the_segment_command_takes_the_window_and_refuses_a_bad_one(model_dir, tmp_path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(_frames(1, 40, 80)[0]).save(images / "a.png")

    def segment(output: str, *window: str) -> None:
        main(
            [
                "--model",
                str(model_dir),
                "--input",
                str(images),
                "--output",
                str(tmp_path / output),
                *window,
            ]
        )

    segment("o", "--window", "32", "32", "--stride", "16", "16")
    assert (tmp_path / "o" / "masks" / "a.png").is_file()
    for bad in (("--window", "32", "32", "--stride", "48", "16"), ("--window", "32", "32")):
        with pytest.raises(SystemExit):
            segment("p", *bad)
    assert not (tmp_path / "p").exists()
