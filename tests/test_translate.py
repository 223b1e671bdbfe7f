"""Translation of prepared splits and plain folders (the sim2real-translate command), resuming,
refusing another generator's folder, and the domain-shift scores."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline.translate
from pipeline import dist
from pipeline.cli.translate import main
from pipeline.colour_stats import ColourStats, channel_stats, domain_distance
from pipeline.data.split import PreparedSplit
from pipeline.io import read_rgb, write_png
from pipeline.models.cyclegan import build_generator, size_multiple, translate_batch
from pipeline.models.generator_folder import write_generators
from pipeline.translate import OUTPUT_MARKER, TranslateError, translate_folder, translate_split

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: more threads only wait on each other
    yield
    torch.set_num_threads(previous)


def tiny_generator(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator("resnet_6blocks", ngf=4).eval()


@pytest.fixture
def split() -> tuple[np.ndarray, list[str]]:
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 64, 3), dtype=np.uint8)
    return images, [f"frame_{i:02d}" for i in range(5)]


def test_translated_split_keeps_names_order_and_shape(tmp_path: Path, split) -> None:
    images, names = split
    generator = tiny_generator()
    result = translate_split(generator, images, names, tmp_path, 2, "fp32", CPU)
    assert result.frames == 5 and result.translated == 5
    opened = PreparedSplit.open(tmp_path)
    assert opened.names == names
    assert opened.images.shape == images.shape and opened.images.dtype == np.uint8
    expected = translate_batch(generator, images, "fp32", CPU)
    np.testing.assert_array_equal(opened.images, expected)
    assert sorted(p.stem for p in (tmp_path / "images").iterdir()) == names


def test_writer_threads_change_no_byte_and_count_every_colour(tmp_path: Path, split) -> None:
    """Three threads write the same PNG bytes as one; the colour statistics gathered on them
    (partly on a resumed run) equal one pass over the source and the translated frames."""
    images, names = split
    generator = tiny_generator()
    translate_split(generator, images, names, tmp_path / "one", 2, "fp32", CPU, workers=1)
    partial = translate_split(
        generator, images[:3], names[:3], tmp_path / "three", 1, "fp32", CPU, workers=3
    )
    assert partial.translated == 3
    result = translate_split(
        generator, images, names, tmp_path / "three", 1, "fp32", CPU, workers=3
    )
    assert result.translated == 2  # frames 0-2 were on disk: only read back
    for name in names:
        png = f"images/{name}.png"
        assert (tmp_path / "one" / png).read_bytes() == (tmp_path / "three" / png).read_bytes()
    translated = PreparedSplit.open(tmp_path / "three").images
    assert np.array_equal(translated, PreparedSplit.open(tmp_path / "one").images)
    assert np.array_equal(result.source_stats.counts, channel_stats(images).counts)
    assert np.array_equal(result.translated_stats.counts, channel_stats(translated).counts)


def test_colour_stats_are_exact_counts() -> None:
    frames = np.random.default_rng(3).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    whole = ColourStats.of(frames)
    assert whole.counts.sum() == 3 * 5 * 6 * 7
    assert np.array_equal(
        whole.counts, (ColourStats.of(frames[:2]) + ColourStats.of(frames[2:])).counts
    )
    assert np.array_equal(whole.counts, channel_stats(frames, workers=2, chunk=2).counts)
    pixels = frames.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(whole.mean, pixels.mean(axis=0))
    np.testing.assert_allclose(whole.std, pixels.std(axis=0))
    bins = np.stack([np.bincount(pixels[:, c].astype(int) // 8, minlength=32) for c in range(3)])
    np.testing.assert_allclose(whole.hist, bins / len(pixels))


def test_rerun_skips_finished_frames(tmp_path: Path, split) -> None:
    images, names = split
    generator = tiny_generator()
    translate_split(generator, images, names, tmp_path, 2, "fp32", CPU)
    sentinel = np.zeros((32, 64, 3), dtype=np.uint8)
    write_png(tmp_path / "images" / "frame_01.png", sentinel)
    (tmp_path / "images" / "frame_03.png").unlink()

    result = translate_split(generator, images, names, tmp_path, 2, "fp32", CPU)
    assert result.translated == 1
    np.testing.assert_array_equal(read_rgb(tmp_path / "images" / "frame_01.png"), sentinel)
    opened = PreparedSplit.open(tmp_path)
    np.testing.assert_array_equal(opened.images[1], sentinel)
    np.testing.assert_array_equal(
        opened.images[3], translate_batch(generator, images[3:4], "fp32", CPU)[0]
    )


@pytest.mark.parametrize(
    ("weights_seed", "precision"), [(1, "fp32"), (0, "bf16")], ids=["weights", "precision"]
)
def test_another_run_discards_earlier_translations(
    tmp_path: Path, split, weights_seed: int, precision: str
) -> None:
    """Other weights, or the same weights in another precision, give other pixels: nothing
    the first run wrote is reused."""
    images, names = split
    translate_split(tiny_generator(0), images, names, tmp_path, 8, "fp32", CPU)
    write_png(tmp_path / "images" / "frame_00.png", np.zeros((32, 64, 3), dtype=np.uint8))
    result = translate_split(
        tiny_generator(weights_seed), images, names, tmp_path, 8, precision, CPU
    )
    assert result.translated == 5
    assert read_rgb(tmp_path / "images" / "frame_00.png").any()


def test_assembly_names_a_frame_another_rank_left_missing(
    tmp_path: Path, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 of 2 assembles images.npy from the PNGs the other rank wrote; one it did not
    write is named."""
    images, names = split
    monkeypatch.setattr(dist, "shard", lambda count: range(0, count, 2))  # frames 0, 2, 4
    with pytest.raises(TranslateError, match=r"frame_01\.png is missing"):
        translate_split(tiny_generator(), images, names, tmp_path, 8, "fp32", CPU)


def test_size_multiple_follows_the_architecture() -> None:
    assert size_multiple(build_generator("resnet_9blocks", ngf=4)) == 4
    assert size_multiple(build_generator("unet_128", ngf=4)) == 128
    assert size_multiple(build_generator("unet_256", ngf=4)) == 256


def generator_folder(root: Path, seed: int = 0) -> Path:
    """A trained-generator folder as the train_cyclegan stage writes it; its gen_sim2real file."""
    generator = tiny_generator(seed)
    write_generators(root, generator, generator, "resnet_6blocks", 4, "instance")
    return root / "gen_sim2real.safetensors"


def image_folder(folder: Path, sizes: dict[str, tuple[int, int]], seed: int = 1) -> None:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for stem, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / f"{stem}.png"
        )


def test_folder_mode_keeps_odd_sizes_and_skips_finished_files(tmp_path: Path, capsys) -> None:
    generator = tiny_generator()
    weights = generator_folder(tmp_path / "model")
    rng = np.random.default_rng(1)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sizes = {"a": (30, 50), "b": (30, 50), "c": (17, 23), "d": (21, 40)}
    for stem, (h, w) in sizes.items():
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image.save(inputs / (f"{stem}.jpg" if stem == "d" else f"{stem}.png"))
    (inputs / "notes.txt").write_text("not an image")
    argv = ["--generator", str(weights), "--input", str(inputs), "--output", str(outputs)]

    main([*argv, "--precision", "fp32", "--batch", "2"])
    assert "translated 4 of 4 images" in capsys.readouterr().out
    for stem, (h, w) in sizes.items():
        assert read_rgb(outputs / f"{stem}.png").shape == (h, w, 3)
    source = read_rgb(inputs / "a.png")
    np.testing.assert_array_equal(
        read_rgb(outputs / "a.png"), translate_batch(generator, source[None], "fp32", CPU)[0]
    )

    sentinel = np.zeros((30, 50, 3), dtype=np.uint8)
    write_png(outputs / "a.png", sentinel)
    (outputs / "c.png").unlink()
    main(argv)
    assert "translated 1 of 4 images" in capsys.readouterr().out
    np.testing.assert_array_equal(read_rgb(outputs / "a.png"), sentinel)
    assert read_rgb(outputs / "c.png").shape == (17, 23, 3)


def test_folder_mode_loads_a_reference_checkpoint(tmp_path: Path) -> None:
    generator = tiny_generator()
    # As the reference saves it after DataParallel: every key prefixed with "module.".
    reference = {f"module.{k}": v for k, v in generator.state_dict().items()}
    torch.save(reference, tmp_path / "latest_net_G_A.pth")
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = np.random.default_rng(2).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    Image.fromarray(image).save(inputs / "x.png")
    main(
        [
            "--generator", str(tmp_path / "latest_net_G_A.pth"),
            "--reference-netG", "resnet_6blocks", "--ngf", "4",
            "--input", str(inputs), "--output", str(tmp_path / "out"), "--precision", "fp32",
        ]
    )  # fmt: skip
    np.testing.assert_array_equal(
        read_rgb(tmp_path / "out" / "x.png"),
        translate_batch(generator, image[None], "fp32", CPU)[0],
    )


def test_trained_weights_without_settings_file_are_explained(tmp_path: Path) -> None:
    torch.save(tiny_generator().state_dict(), tmp_path / "gen.pt")
    (tmp_path / "in").mkdir()
    with pytest.raises(SystemExit, match=r"generator\.json: not found.*--reference-netG"):
        main(
            [
                "--generator",
                str(tmp_path / "gen.pt"),
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "o"),
            ]
        )


@pytest.mark.parametrize("batch", [1, 2])
def test_folder_mode_writes_each_batch_before_reading_on(
    tmp_path: Path, monkeypatch, batch
) -> None:
    """A frame is on disk as soon as its batch is translated, not only once the next image has
    been read: a run stopped while reading (a kill, a slow or failing drive) loses nothing
    translated. Seen at each read: how many PNGs the output folder holds."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    image_folder(inputs, {stem: (20, 24) for stem in "abcde"})
    seen = []

    def counting_read(path: Path) -> np.ndarray:
        seen.append(len(list(outputs.glob("*.png"))))
        return read_rgb(path)

    monkeypatch.setattr(pipeline.translate, "read_rgb", counting_read)
    translate_folder(tiny_generator(), "gen.safetensors", inputs, outputs, batch, "fp32", CPU)
    assert seen == [k - k % batch for k in range(5)]
    assert len(list(outputs.glob("*.png"))) == 5


@pytest.mark.parametrize("batch", ["1", "16"])
def test_folder_command_names_a_corrupt_image_in_one_line_and_keeps_finished_frames(
    tmp_path: Path, batch: str
) -> None:
    weights = generator_folder(tmp_path / "model")
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    image_folder(inputs, {"a": (20, 24), "b": (20, 24), "c": (12, 16)})
    (inputs / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    argv = ["--generator", str(weights), "--input", str(inputs), "--output", str(outputs)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--batch", batch, "--precision", "fp32"])
    message = str(exit_info.value.code)
    assert message.startswith("sim2real-translate: ") and "\n" not in message
    assert f"{inputs / 'z.png'}: unreadable image" in message
    generator = tiny_generator()
    for stem in "abc":
        source = read_rgb(inputs / f"{stem}.png")
        expected = translate_batch(generator, source[None], "fp32", CPU)[0]
        np.testing.assert_array_equal(read_rgb(outputs / f"{stem}.png"), expected)


def test_folder_of_another_generator_is_refused_and_kept(tmp_path: Path, capsys) -> None:
    first = generator_folder(tmp_path / "first", seed=0)
    second = generator_folder(tmp_path / "second", seed=1)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    image_folder(inputs, {"a": (20, 24), "b": (12, 16)})
    argv = ["--input", str(inputs), "--output", str(outputs), "--precision", "fp32"]
    main(["--generator", str(first), *argv])
    before = {p.name: p.read_bytes() for p in outputs.iterdir()}
    assert set(before) == {"a.png", "b.png", OUTPUT_MARKER}
    named = re.escape(f"({outputs / OUTPUT_MARKER} names {first})")
    with pytest.raises(SystemExit, match=rf"another generator {named}.*another --output"):
        main(["--generator", str(second), *argv])
    assert {p.name: p.read_bytes() for p in outputs.iterdir()} == before
    # The same generator again: nothing to do, the folder is its own.
    main(["--generator", str(first), *argv])
    assert "translated 0 of 2 images" in capsys.readouterr().out
    # PNGs nobody claimed (an older run, another tool) are not taken for this generator's.
    (outputs / OUTPUT_MARKER).unlink()
    with pytest.raises(TranslateError, match=rf"no {OUTPUT_MARKER} says which generator"):
        translate_folder(tiny_generator(0), first, inputs, outputs, 2, "fp32", CPU)


def test_domain_distance_by_hand() -> None:
    black = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    white = np.full((3, 4, 4, 3), 255, dtype=np.uint8)
    half = np.concatenate([np.zeros((1, 2, 4, 3)), np.full((1, 2, 4, 3), 255)], axis=1)
    assert domain_distance(channel_stats(black), channel_stats(black)) == {
        "meanstd_distance": 0.0,
        "hist_distance": 0.0,
    }
    # Disjoint histograms are 2 apart; means differ by 255 and both stds are 0.
    assert domain_distance(channel_stats(black), channel_stats(white)) == {
        "meanstd_distance": 1.0,
        "hist_distance": 2.0,
    }
    # Half black, half white: mean 127.5, std 127.5; half the mass overlaps with black.
    far = domain_distance(channel_stats(half.astype(np.uint8)), channel_stats(black))
    assert far["meanstd_distance"] == pytest.approx(1.0)
    assert far["hist_distance"] == pytest.approx(1.0)
    stats = channel_stats(
        np.random.default_rng(0).integers(0, 256, (7, 5, 6, 3), dtype=np.uint8), chunk=3
    )
    assert stats.hist.shape == (3, 32)
    np.testing.assert_allclose(stats.hist.sum(axis=1), 1.0)
