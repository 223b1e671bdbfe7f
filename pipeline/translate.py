"""Run a trained generator over images: a prepared split, or a plain folder of image files.

A translated split is a folder laid out like a prepared one, so ``PreparedSplit.open`` reads it
and the segmentation stage pairs it with the source labels by name:
    images/<name>.png  one uint8 PNG per frame, written atomically; existing ones are kept, so
                       a killed run resumes where it stopped
    images.npy         (N, H, W, 3) uint8 assembled from the PNGs, in the source split's order
    names.json         the source split's names, same order
    source.json        fingerprint of the weights that wrote the PNGs; PNGs of other weights are
                       discarded instead of being mixed in

A translated folder (`translate_folder`, behind the ``sim2real-translate`` command of
pipeline.cli.translate) holds OUTPUT/<name>.png for every image file of the input folder, at
that image's own size, and translate.json naming the generator that wrote them. Each PNG is
written atomically as soon as its batch is translated; a rerun skips finished frames, and a
folder that another generator wrote is refused rather than mixed into.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import dist, runtime
from pipeline.colour_stats import ColourStats, channel_stats, domain_shift_report
from pipeline.config import TranslateConfig
from pipeline.data.split import PreparedSplit
from pipeline.fingerprint import run_fingerprint
from pipeline.io import (
    ImageReadError,
    OutputClaimed,
    atomic_path,
    claim_folder,
    image_files,
    read_json,
    read_rgb,
    remove_orphan_temps,
    write_json,
    write_png,
)
from pipeline.models.cyclegan import translate_batch
from pipeline.models.generator_folder import load_trained_generator
from pipeline.tracking.base import Tracker

# Written into a translated split: the sha256 of the weights that translated it.
SOURCE_MARKER = "source.json"
# Written into a translated folder (`translate_folder`): which generator made its PNGs.
OUTPUT_MARKER = "translate.json"


class TranslateError(RuntimeError):
    """Translation cannot start or finish; the message names the file."""


def fingerprint(generator: nn.Module) -> str:
    """sha256 of the generator's weights, to tell whose translations a folder holds."""
    digest = hashlib.sha256()
    for key, value in sorted(generator.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Writer:
    """Threads that store translated batches (PNG files, rows of images.npy) and gather colour
    statistics while the caller translates the next batch. PNG encoding (zlib) and the
    histograms release the GIL, so the threads run beside the generator."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(workers)
        self.pending: collections.deque[Future] = collections.deque()
        self.limit = 2 * workers  # batches in flight: bounds the memory they hold
        self.source = ColourStats.empty()
        self.translated = ColourStats.empty()

    def submit(self, task: Callable[..., tuple[ColourStats, ColourStats]], *args: Any) -> None:
        self.pending.append(self.pool.submit(task, *args))
        while len(self.pending) > self.limit:
            self._collect(self.pending.popleft())

    def _collect(self, future: Future) -> None:
        source, translated = future.result()  # a failed write is raised here
        self.source += source
        self.translated += translated

    def drain(self) -> None:
        while self.pending:
            self._collect(self.pending.popleft())

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclasses.dataclass(frozen=True)
class Translation:
    """What `translate_split` did: counts, time, and the colour statistics of the frames before
    (`source_stats`) and after (`translated_stats`) translation: of the whole split on rank 0,
    of the frames it translated on any other rank."""

    frames: int
    translated: int  # by this run, over all ranks (the others were on disk already)
    seconds: float
    img_per_s: float | None
    source_stats: ColourStats
    translated_stats: ColourStats

    def summary(self) -> dict[str, Any]:
        """frames, translated, seconds, img_per_s."""
        return {
            "frames": self.frames,
            "translated": self.translated,
            "seconds": self.seconds,
            "img_per_s": self.img_per_s,
        }


def translate_split(
    generator: nn.Module,
    images: np.ndarray,
    names: Sequence[str],
    out_dir: str | Path,
    batch: int,
    precision: str,
    device: torch.device,
    inputs: Sequence[str | Path] = (),
    workers: int = 1,
) -> Translation:
    """Translate every frame of a prepared split into a translated split folder at `out_dir`.

    Frames whose PNG already exists are skipped (resume), but only when the same run wrote them:
    same generator weights, precision, pipeline code and `inputs` (the folder `images` came
    from, identified as `run_fingerprint` does); otherwise earlier PNGs are discarded first.
    `workers` threads write each batch while the next one is translated. Each rank translates
    its shard; rank 0 assembles images.npy (its own frames as they come, the others from their
    PNGs) and names.json.
    """
    if len(images) != len(names):
        raise TranslateError(f"{len(images)} images but {len(names)} names")
    out_dir = Path(out_dir)
    png_dir = out_dir / "images"
    precision = runtime.resolve_precision(precision, device)
    generator = generator.to(device).eval()
    if dist.is_main():
        # A changed precision or translation code changes the pixels even with the same weights.
        run = {"weights": fingerprint(generator), "precision": precision}
        _discard_foreign_translations(out_dir, run_fingerprint(run, inputs))
        remove_orphan_temps(png_dir)
        remove_orphan_temps(out_dir)
    dist.barrier()

    todo = [i for i in dist.shard(len(names)) if not (png_dir / f"{names[i]}.png").is_file()]
    batches = [todo[first : first + batch] for first in range(0, len(todo), batch)]
    with (
        _assembled(out_dir, names, images.shape[1:], dist.is_main()) as assembly,
        _Writer(workers) as writer,
        ThreadPoolExecutor(1) as reader,
    ):
        start = time.perf_counter()
        with runtime.progress(
            total=len(todo), desc="translate", enabled=dist.is_main()
        ) as progress:
            # One batch read ahead, so the device never waits for the (memory-mapped) frames.
            upcoming = [reader.submit(_read, images, rows, device) for rows in batches[:1]]
            for index, rows in enumerate(batches):
                source = upcoming.pop().result()  # (B, H, W, 3) uint8
                if index + 1 < len(batches):
                    upcoming.append(reader.submit(_read, images, batches[index + 1], device))
                translated = translate_batch(generator, source, precision, device)
                writer.submit(_store, png_dir, names, rows, source, translated, assembly)
                progress.update(len(rows))
            writer.drain()
        seconds = time.perf_counter() - start
        # On the device: NCCL reduces only CUDA tensors.
        totals = torch.tensor([len(todo), seconds], dtype=torch.float64, device=device)
        dist.all_reduce_sum(totals)
        dist.barrier()  # every rank's PNGs are written
        if assembly is not None:
            others = sorted(set(range(len(names))) - set(todo))
            _fill_from_pngs(writer, png_dir, names, others, assembly, images)
    dist.barrier()
    count, total_seconds = int(totals[0].item()), totals[1].item()
    # Ranks work in parallel: throughput is the total over the mean time of a rank.
    mean_seconds = total_seconds / dist.world_size()
    return Translation(
        frames=len(names),
        translated=count,
        seconds=round(mean_seconds, 3),
        img_per_s=round(count / mean_seconds, 3) if count and mean_seconds > 0 else None,
        source_stats=writer.source,
        translated_stats=writer.translated,
    )


def _read(images: np.ndarray, rows: Sequence[int], device: torch.device) -> Tensor:
    """Rows of `images` as a (B, H, W, 3) uint8 tensor, page-locked when bound for CUDA."""
    frames = torch.from_numpy(np.asarray(images[rows]))
    return frames.pin_memory() if device.type == "cuda" else frames


def _store(
    png_dir: Path,
    names: Sequence[str],
    rows: Sequence[int],
    source: Tensor,
    translated: np.ndarray,
    assembly: np.ndarray | None,
) -> tuple[ColourStats, ColourStats]:
    """Write one translated batch (PNGs, and its rows of images.npy on rank 0); its stats."""
    for row, image in zip(rows, translated):
        write_png(png_dir / f"{names[row]}.png", image)
        if assembly is not None:
            assembly[row] = image
    return ColourStats.of(source), ColourStats.of(translated)


def _fill_from_pngs(
    writer: _Writer,
    png_dir: Path,
    names: Sequence[str],
    rows: Sequence[int],
    assembly: np.ndarray,
    images: np.ndarray | None,
) -> None:
    """Read the PNGs of `rows` into `assembly` on the writer's threads, adding their colour
    statistics (and those of their `images` rows, the source frames, when given)."""

    def load(row: int) -> tuple[ColourStats, ColourStats]:
        path = png_dir / f"{names[row]}.png"
        image = read_rgb(path)
        if image.shape != assembly.shape[1:]:
            raise TranslateError(f"{path} is {image.shape}, expected {assembly.shape[1:]}")
        assembly[row] = image
        source = ColourStats.of(images[row]) if images is not None else ColourStats.empty()
        return source, ColourStats.of(image)

    missing = [names[row] for row in rows if not (png_dir / f"{names[row]}.png").is_file()]
    if missing:
        raise TranslateError(
            f"{png_dir / missing[0]}.png is missing ({len(missing)} of {len(names)} "
            f"frames have no translation); rerun the translate stage to fill them in"
        )
    for row in rows:
        writer.submit(load, row)
    writer.drain()


@contextlib.contextmanager
def _assembled(
    out_dir: Path, names: Sequence[str], shape: Sequence[int], main: bool
) -> Iterator[np.ndarray | None]:
    """On the main rank, images.npy (N, H, W, 3) uint8 to fill, under a temp name that becomes
    images.npy (and names.json is written) only when the block finishes; elsewhere None."""
    if not main:
        yield None
        return
    with atomic_path(out_dir / "images.npy") as tmp:
        array = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(names), *shape)
        )
        yield array
        array.flush()
        del array
    write_json(out_dir / "names.json", list(names))


def _discard_foreign_translations(out_dir: Path, run_hash: str) -> None:
    """Keep existing PNGs only when the same run (weights, precision, code, inputs) wrote them."""
    marker = out_dir / SOURCE_MARKER
    if marker.is_file() and read_json(marker).get("run") == run_hash:
        return
    if (out_dir / "images").exists():
        shutil.rmtree(out_dir / "images")
    write_json(marker, {"run": run_hash})


def claim_output(output_dir: Path, generator: nn.Module, weights: str | Path) -> None:
    """Mark `output_dir` as the translations of `generator` (loaded from `weights`), or refuse
    it when another generator's PNGs are there: a rerun would otherwise skip them as done."""
    marker = output_dir / OUTPUT_MARKER
    try:
        claim_folder(marker, "generator", str(weights), fingerprint(generator), output_dir, "*.png")
    except OutputClaimed as claimed:
        if not claimed.marked:
            raise TranslateError(
                f"{output_dir} holds PNGs but no {OUTPUT_MARKER} says which generator made "
                f"them; pick another --output folder"
            ) from None
        raise TranslateError(
            f"{output_dir} holds translations of another generator ({marker} names "
            f"{claimed.owner}); pick another --output folder, or delete that one to redo it "
            f"with {weights}"
        ) from None


def translate_folder(
    generator: nn.Module,
    weights: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    batch: int,
    precision: str,
    device: torch.device,
) -> dict[str, Any]:
    """Translate every image file in `input_dir` at its own size to output_dir/<stem>.png.

    `weights` is the file `generator` was loaded from, recorded in translate.json. Consecutive
    files of the same size share a forward pass, up to `batch` of them, and are written as soon
    as it ends. Existing outputs are kept (resume); an output folder of another generator is
    refused (TranslateError). An unreadable image raises ImageReadError after every frame read
    before it is written. Returns files, translated, seconds, img_per_s.
    """
    output_dir = Path(output_dir)
    files = image_files(input_dir)
    precision = runtime.resolve_precision(precision, device)
    generator = generator.to(device).eval()
    claim_output(output_dir, generator, weights)
    todo = [p for p in files if not (output_dir / f"{p.stem}.png").is_file()]

    start = time.perf_counter()
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        translated = translate_batch(
            generator, np.stack([image for _, image in pending]), precision, device
        )
        for (path, _), image in zip(pending, translated):
            write_png(output_dir / f"{path.stem}.png", image)
        pending.clear()

    for path in runtime.progress(todo, desc="translate"):
        try:
            image = read_rgb(path)
        except (ImageReadError, OSError):
            # Frames read before the bad one are finished first, so a rerun starts after them.
            if pending:
                flush()
            raise
        if pending and pending[0][1].shape != image.shape:
            flush()
        pending.append((path, image))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    seconds = time.perf_counter() - start
    return {
        "files": len(files),
        "translated": len(todo),
        "seconds": round(seconds, 3),
        "img_per_s": round(len(todo) / seconds, 3) if todo and seconds > 0 else None,
    }


# Frames shown side by side (sim over translated) in the translator's MLflow run.
SHOWN_FRAMES = 4


def translate_prepared(
    config: TranslateConfig,
    generator_dir: Path,
    sim_root: Path,
    real_root: Path,
    out_dir: Path,
    metrics_path: Path,
    tracker: Tracker,
) -> dict[str, Any] | None:
    """The translate stage: every frame of the prepared sim split through the generator in
    `generator_dir` into `out_dir` (`translate_split`), then on rank 0 the colour-statistics
    distance to the real split before and after (written to `metrics_path`) and a strip of
    sim-over-translated frames, logged to `tracker` (the translator's training run)."""
    runtime.set_threads(config.threads)
    device = runtime.pick_device()
    generator = load_trained_generator(generator_dir / "gen_sim2real.safetensors", device)
    sim, real = PreparedSplit.open(sim_root), PreparedSplit.open(real_root)
    with ThreadPoolExecutor(1) as background:
        # Rank 0 counts the real frames' colours while the sim frames translate.
        real_stats = background.submit(
            channel_stats, real.images if dist.is_main() else real.images[:0], config.workers
        )
        result = translate_split(
            generator,
            sim.images,
            sim.names,
            out_dir,
            config.batch,
            config.precision,
            device,
            inputs=[sim_root],
            workers=config.workers,
        )
        start = time.perf_counter()
        target = real_stats.result()
    if not dist.is_main():
        return None
    metrics = {
        **domain_shift_report(result.source_stats, result.translated_stats, target),
        **result.summary(),
        "precision": runtime.resolve_precision(config.precision, device),
        "score_seconds": round(time.perf_counter() - start, 3),
    }
    write_json(metrics_path, metrics)
    print(", ".join(f"{k}: {v}" for k, v in metrics.items()))
    tracker.log_metrics(
        {f"translate_{k}": v for k, v in metrics.items() if isinstance(v, float | int)}
    )
    shown = min(SHOWN_FRAMES, len(sim.names))
    translated = PreparedSplit.open(out_dir)
    rows = [np.concatenate(list(split.images[:shown]), axis=1) for split in (sim, translated)]
    tracker.log_image("translate_samples", np.concatenate(rows, axis=0))
    return metrics
