"""Procedural street scenes: a small "sim" set in the GTA5 layout and a "real" set in the
Cityscapes layout, so the real readers, stages and metrics run anywhere.

Both domains draw scenes from one street grammar (a road in perspective towards a vanishing point,
sidewalks, terrain verges, buildings with windows, vegetation, fences and walls, poles carrying
signs and traffic lights, cars, trucks and buses on the road, people on the sidewalks, sky), so the
label distributions match, as GTA5 and Cityscapes roughly do. What differs is appearance, the way a
game renderer differs from a car camera:

- sim: flat, saturated, sharp. Each class is painted in a vivid "game" colour with a little
  per-object variation and simple shading; edges are aliased.
- real: the same class albedos, desaturated, with a class-dependent hue shift (the camera's
  colour response), fine and coarse texture, a per-image colour cast and exposure, optical blur,
  vignetting and sensor noise.

The gap is mostly appearance, so a network trained on sim colours mislabels real ones, a network
trained on real labels does well, and an appearance-level method (CycleGAN, FDA) can close much of
it. The scene layouts are shared, so content does not leak a domain cue.

Everything is driven by one `numpy.random.Generator` per frame, seeded from (seed, domain, index):
the same settings always give byte-identical files.

On request the sim frames are also written in the SYNTHIA (RAND-CITYSCAPES) layout: the same
images, with 16-bit labels of SYNTHIA class ids in which terrain, truck and train are void, as
in the real SYNTHIA renders, so the 16- and 13-class protocols have a source set to run on.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.config import DemoDataConfig
from pipeline.data.labels import CLASS_NAMES, TRAIN_ID_TO_ID
from pipeline.data.prepare import default_signal_handlers
from pipeline.data.synthia import SYNTHIA_CLASSES
from pipeline.io import atomic_path, write_png, write_png_16bit
from pipeline.runtime import progress

T = {name: train_id for train_id, name in enumerate(CLASS_NAMES)}

# Albedo of each class in the real domain (RGB, 0-255): muted, like Cityscapes.
REAL_ALBEDO = {
    "road": (110, 105, 112),
    "sidewalk": (150, 140, 135),
    "building": (125, 110, 100),
    "wall": (140, 135, 120),
    "fence": (120, 105, 85),
    "pole": (85, 85, 90),
    "traffic light": (60, 60, 55),
    "traffic sign": (190, 175, 80),
    "vegetation": (80, 110, 55),
    "terrain": (135, 140, 85),
    "sky": (170, 190, 210),
    "person": (120, 60, 70),
    "car": (70, 80, 120),
    "truck": (150, 150, 160),
    "bus": (200, 170, 60),
}

# The game palette: a hue-rotated, saturated version of the real albedo. The mapping is fixed
# (a renderer's look), so a pixel-level translator can learn it from unpaired images.
SIM_ALBEDO = {
    "road": (150, 60, 170),
    "sidewalk": (250, 120, 200),
    "building": (210, 90, 60),
    "wall": (230, 200, 60),
    "fence": (240, 140, 40),
    "pole": (60, 60, 200),
    "traffic light": (20, 200, 200),
    "traffic sign": (255, 240, 0),
    "vegetation": (20, 200, 40),
    "terrain": (180, 240, 60),
    "sky": (40, 170, 255),
    "person": (255, 20, 60),
    "car": (20, 40, 250),
    "truck": (120, 240, 240),
    "bus": (255, 170, 0),
}


# Classes a SYNTHIA render never shows; the demo's SYNTHIA copy labels them void.
_NOT_IN_SYNTHIA = ("terrain", "truck", "train")

# (256,) uint16 lookup: train id -> SYNTHIA class id (0 void for ignore and the classes above).
TRAIN_ID_TO_SYNTHIA_ID = np.zeros(256, dtype=np.uint16)
for _synthia_id, _, _cityscapes_name in SYNTHIA_CLASSES:
    if _cityscapes_name in CLASS_NAMES and _cityscapes_name not in _NOT_IN_SYNTHIA:
        TRAIN_ID_TO_SYNTHIA_ID[CLASS_NAMES.index(_cityscapes_name)] = _synthia_id


@dataclasses.dataclass(frozen=True)
class DemoSpec:
    seed: int
    n_source: int
    n_target_train: int
    n_target_val: int
    size: tuple[int, int]  # (H, W)
    synthia: bool = False  # also write the sim frames in the SYNTHIA layout


def generate(spec: DemoSpec, out_dir: str | Path, workers: int = 1) -> dict[str, int]:
    """Write `out_dir/gta5` (GTA5 layout) and `out_dir/cityscapes` (Cityscapes layout), and with
    `spec.synthia` the same sim frames as `out_dir/synthia` (SYNTHIA layout)."""
    out_dir = Path(out_dir)
    synthia_root = out_dir / "synthia" if spec.synthia else None
    jobs = [
        _FrameJob(
            spec.seed, "sim", i, spec.size, out_dir / "gta5", f"{i + 1:05d}", "", "", synthia_root
        )
        for i in range(spec.n_source)
    ]
    counts = {"sim": spec.n_source}
    offset = 0
    for split, count, city in (
        ("train", spec.n_target_train, "demotown"),
        ("val", spec.n_target_val, "democity"),
    ):
        jobs += [
            _FrameJob(
                spec.seed,
                "real",
                offset + i,
                spec.size,
                out_dir / "cityscapes",
                f"{city}_{i // 100:06d}_{i % 100:06d}",
                split,
                city,
            )
            for i in range(count)
        ]
        offset += count
        counts[f"real_{split}"] = count
    if spec.synthia:
        counts["synthia"] = spec.n_source
    if workers > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=default_signal_handlers) as pool:
            for _ in progress(
                pool.imap_unordered(_write_frame, jobs, chunksize=8),
                total=len(jobs),
                desc="demo_data",
            ):
                pass
    else:
        for job in progress(jobs, desc="demo_data"):
            _write_frame(job)
    return counts


@dataclasses.dataclass(frozen=True)
class _FrameJob:
    seed: int
    domain: str
    index: int
    size: tuple[int, int]
    root: Path
    stem: str
    split: str  # Cityscapes split; empty for GTA5
    city: str
    synthia_root: Path | None = None  # sim only: where to write the SYNTHIA-layout copy


def _write_frame(job: _FrameJob) -> None:
    image, label = render_frame(job.seed, job.domain, job.index, job.size)
    if job.domain == "sim":
        write_png(job.root / "images" / f"{job.stem}.png", image)
        # GTA5 labels are palette PNGs of Cityscapes label ids.
        _write_palette_label(job.root / "labels" / f"{job.stem}.png", TRAIN_ID_TO_ID[label])
        if job.synthia_root is not None:
            _write_synthia_frame(job.synthia_root, job.index, image, label)
        return
    folder = job.root / "leftImg8bit" / job.split / job.city
    write_png(folder / f"{job.stem}_leftImg8bit.png", image)
    labels = job.root / "gtFine" / job.split / job.city
    write_png(labels / f"{job.stem}_gtFine_labelIds.png", TRAIN_ID_TO_ID[label])


def _write_synthia_frame(root: Path, index: int, image: np.ndarray, label: np.ndarray) -> None:
    """SYNTHIA names frames NNNNNNN.png from 0; labels are 16-bit RGB with the class id in R and
    the instance id in G (0 here: the demo has no instances)."""
    stem = f"{index:07d}"
    write_png(root / "RGB" / f"{stem}.png", image)
    channels = np.zeros((*label.shape, 3), dtype=np.uint16)
    channels[..., 0] = TRAIN_ID_TO_SYNTHIA_ID[label]
    write_png_16bit(root / "GT" / "LABELS" / f"{stem}.png", channels)


def _write_palette_label(path: Path, label_ids: np.ndarray) -> None:
    image = Image.fromarray(label_ids, mode="L").convert("P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:, 0] = np.arange(256)  # any palette works: the indices are the ids
    image.putpalette(palette.flatten().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def render_frame(
    seed: int, domain: str, index: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: (H, W, 3) uint8 image and (H, W) uint8 train-id label (255 = ignore)."""
    domain_id = {"sim": 0, "real": 1}[domain]
    rng = np.random.default_rng([seed, domain_id, index])
    height, width = size
    scene = _Scene(rng, height, width)
    scene.compose()
    if domain == "sim":
        image = _paint_sim(scene, rng)
    else:
        image = _paint_real(scene, rng)
    return image, scene.label


class _Scene:
    """Layout and label map of one street scene; painting is done per domain afterwards."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.h, self.w = height, width
        self.label = np.full((height, width), 255, dtype=np.uint8)
        # Per-pixel instance shade in [-1, 1], so objects of one class differ a little.
        self.shade = np.zeros((height, width), dtype=np.float32)
        self._canvas = Image.fromarray(self.label)
        self._shade_canvas = Image.new("F", (width, height), 0.0)

    def _poly(self, points: list[tuple[float, float]], cls: str, shade: float = 0.0) -> None:
        ImageDraw.Draw(self._canvas).polygon(points, fill=T[cls])
        ImageDraw.Draw(self._shade_canvas).polygon(points, fill=shade)

    def _rect(self, x0: float, y0: float, x1: float, y1: float, cls: str, shade: float = 0.0):
        self._poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, shade)

    def _ellipse(self, x0: float, y0: float, x1: float, y1: float, cls: str, shade: float = 0.0):
        ImageDraw.Draw(self._canvas).ellipse([x0, y0, x1, y1], fill=T[cls])
        ImageDraw.Draw(self._shade_canvas).ellipse([x0, y0, x1, y1], fill=shade)

    def compose(self) -> None:
        rng, h, w = self.rng, self.h, self.w
        horizon = h * rng.uniform(0.38, 0.5)
        vanish_x = w * rng.uniform(0.4, 0.6)
        self.horizon, self.vanish_x = horizon, vanish_x
        self._rect(0, 0, w, horizon + 1, "sky")
        # Ground plane: terrain verges, then sidewalks, then the road on top.
        self._rect(0, horizon, w, h, "terrain", rng.uniform(-0.3, 0.3))
        road_half = w * rng.uniform(0.3, 0.45)
        walk = w * rng.uniform(0.15, 0.3)
        self._poly(
            [
                (vanish_x - 4, horizon),
                (vanish_x, horizon),
                (vanish_x + road_half + walk, h),
                (vanish_x - road_half - walk, h),
            ],
            "sidewalk",
        )
        self._poly(
            [
                (vanish_x - 1, horizon),
                (vanish_x + 1, horizon),
                (vanish_x + road_half, h),
                (vanish_x - road_half, h),
            ],
            "road",
        )
        self._buildings(horizon, vanish_x)
        self._trees(horizon)
        self._roadside(horizon, vanish_x, road_half, walk)
        self._vehicles(horizon, vanish_x, road_half)
        self._people(horizon, vanish_x, road_half, walk)
        self.label = np.asarray(self._canvas, dtype=np.uint8).copy()
        self.shade = np.asarray(self._shade_canvas, dtype=np.float32).copy()

    def _depth_scale(self, y: float) -> float:
        """Apparent size at image row y: 0 at the horizon, 1 at the bottom edge."""
        return max(0.02, (y - self.horizon) / (self.h - self.horizon))

    def _buildings(self, horizon: float, vanish_x: float) -> None:
        rng, h, w = self.rng, self.h, self.w
        for side in (-1, 1):
            x = vanish_x + side * w * 0.03
            edge = 0.0 if side < 0 else float(w)
            while (x > edge) if side < 0 else (x < edge):
                width = w * rng.uniform(0.08, 0.22)
                top = horizon - h * rng.uniform(0.1, 0.38)
                bottom = horizon + h * 0.04
                x0, x1 = sorted((x, x + side * width))
                cls = "building" if rng.random() > 0.15 else "wall"
                if cls == "wall":
                    top = horizon - h * rng.uniform(0.03, 0.08)
                self._rect(x0, top, x1, bottom, cls, rng.uniform(-0.6, 0.6))
                x += side * width * rng.uniform(0.9, 1.05)

    def _trees(self, horizon: float) -> None:
        rng, h, w = self.rng, self.h, self.w
        for _ in range(rng.integers(1, 6)):
            cx = rng.uniform(0, w)
            cy = horizon - h * rng.uniform(0.0, 0.2)
            rx, ry = w * rng.uniform(0.04, 0.12), h * rng.uniform(0.06, 0.18)
            self._ellipse(cx - rx, cy - ry, cx + rx, cy + ry, "vegetation", rng.uniform(-0.5, 0.5))

    def _roadside(self, horizon: float, vanish_x: float, road_half: float, walk: float) -> None:
        rng, h = self.rng, self.h
        if rng.random() < 0.5:
            side = rng.choice([-1, 1])
            y0, y1 = horizon + 2, horizon + (h - horizon) * rng.uniform(0.4, 0.9)
            s0, s1 = self._depth_scale(y0), self._depth_scale(y1)
            x_at = lambda y, s: vanish_x + side * (road_half + walk) * s  # noqa: E731
            height0, height1 = h * 0.05 * s0 + 1, h * 0.2 * s1
            self._poly(
                [
                    (x_at(y0, s0), y0 - height0),
                    (x_at(y1, s1), y1 - height1),
                    (x_at(y1, s1), y1),
                    (x_at(y0, s0), y0),
                ],
                "fence",
            )
        for _ in range(rng.integers(2, 6)):
            y = horizon + (h - horizon) * rng.uniform(0.1, 0.95)
            scale = self._depth_scale(y)
            side = rng.choice([-1, 1])
            x = self.vanish_x + side * (road_half + walk * rng.uniform(0.2, 0.8)) * scale
            pole_h, pole_w = h * 0.55 * scale + 2, max(1.0, 0.012 * self.w * scale)
            self._rect(x - pole_w / 2, y - pole_h, x + pole_w / 2, y, "pole")
            top = y - pole_h
            box = max(2.0, 0.04 * self.w * scale)
            kind = rng.random()
            if kind < 0.45:
                self._rect(x - box, top - box * 0.2, x + box * 0.6, top + box, "traffic sign")
            elif kind < 0.8:
                self._rect(x - box * 0.4, top, x + box * 0.4, top + box * 1.8, "traffic light")

    def _vehicles(self, horizon: float, vanish_x: float, road_half: float) -> None:
        rng, h, w = self.rng, self.h, self.w
        rows = sorted(horizon + (h - horizon) * rng.uniform(0.08, 0.9, size=rng.integers(1, 5)))
        for y in rows:  # far to near, so near vehicles are drawn over far ones
            scale = self._depth_scale(y)
            x = vanish_x + rng.uniform(-0.8, 0.8) * road_half * scale
            kind = rng.random()
            cls, vw, vh = (
                ("car", 0.22, 0.13)
                if kind < 0.7
                else ("truck", 0.26, 0.24)
                if kind < 0.85
                else ("bus", 0.3, 0.26)
            )
            vw, vh = vw * w * scale + 2, vh * h * scale * 1.6 + 2
            shade = rng.uniform(-0.8, 0.8)
            if cls == "car":
                self._rect(x - vw / 2, y - vh * 0.6, x + vw / 2, y, cls, shade)
                self._rect(x - vw * 0.35, y - vh, x + vw * 0.3, y - vh * 0.55, cls, shade)
            else:
                self._rect(x - vw / 2, y - vh, x + vw / 2, y, cls, shade)

    def _people(self, horizon: float, vanish_x: float, road_half: float, walk: float) -> None:
        rng, h = self.rng, self.h
        for _ in range(rng.integers(0, 6)):
            y = horizon + (h - horizon) * rng.uniform(0.1, 0.95)
            scale = self._depth_scale(y)
            side = rng.choice([-1, 1])
            x = vanish_x + side * (road_half + walk * rng.uniform(0.1, 0.9)) * scale
            ph, pw = h * 0.3 * scale + 3, self.w * 0.025 * scale + 1
            self._ellipse(x - pw * 0.4, y - ph, x + pw * 0.4, y - ph * 0.8, "person")
            self._rect(x - pw / 2, y - ph * 0.82, x + pw / 2, y, "person", rng.uniform(-0.5, 0.5))


def _albedo_image(label: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.float32)
    for name, colour in palette.items():
        lut[T[name]] = colour
    return lut[label]  # (H, W, 3) float 0-255


def _vertical_gradient(height: int, width: int, top: float, bottom: float) -> np.ndarray:
    return np.linspace(top, bottom, height, dtype=np.float32)[:, None].repeat(width, 1)


def _paint_sim(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    image = _albedo_image(scene.label, SIM_ALBEDO)
    # Flat shading: per-object brightness offset and a sky gradient, nothing else.
    image *= (1.0 + 0.15 * scene.shade)[..., None]
    sky = scene.label == T["sky"]
    image[sky] *= _vertical_gradient(scene.h, scene.w, 0.85, 1.1)[sky][:, None]
    _windows(image, scene, rng, (30, 30, 60))
    return np.clip(image, 0, 255).astype(np.uint8)


def _paint_real(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    h, w = scene.h, scene.w
    image = _albedo_image(scene.label, REAL_ALBEDO)
    image *= (1.0 + 0.12 * scene.shade)[..., None]
    _windows(image, scene, rng, (70, 75, 80))
    # Coarse texture (stains, lighting) and fine grain, stronger on road/vegetation/terrain.
    coarse = _smooth_noise(rng, h, w, cells=(6, 12)) * 28
    fine = rng.normal(0, 1, (h, w)).astype(np.float32)
    grain = np.full(256, 6.0, dtype=np.float32)
    for name, amount in (("road", 12), ("vegetation", 22), ("terrain", 16), ("building", 9)):
        grain[T[name]] = amount
    grain[255] = 6.0
    image += (coarse + fine * grain[scene.label])[..., None]
    sky = scene.label == T["sky"]
    image[sky] *= _vertical_gradient(h, w, 1.05, 0.9)[sky][:, None]
    # Desaturate towards luminance, then the camera: colour cast, exposure, vignetting.
    # Elementwise, not `image @ weights`: a BLAS dot product rounds differently from one CPU's
    # kernels to another's (a machine without AVX-512 wrote other demo frames than the one
    # dvc.lock came from); numpy's elementwise float32 ops round the same everywhere.
    luminance = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    image = luminance[..., None] + rng.uniform(0.55, 0.8) * (image - luminance[..., None])
    image *= rng.uniform(0.85, 1.15, size=3).astype(np.float32) * rng.uniform(0.8, 1.15)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) / 0.5
    image *= (1.0 - 0.35 * radius)[..., None]
    # Optics: blur; sensor: noise after blur so it stays fine-grained.
    blurred = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(radius=rng.uniform(0.8, 1.6) * max(h, w) / 512)
    )
    image = np.asarray(blurred, dtype=np.float32) + rng.normal(0, 5, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _windows(
    image: np.ndarray, scene: _Scene, rng: np.random.Generator, colour: tuple[int, int, int]
) -> None:
    """Window grid on building pixels: structure both domains share, in each one's colours."""
    h, w = scene.h, scene.w
    period_y, period_x = max(3, int(h * 0.045)), max(3, int(w * 0.03))
    yy, xx = np.mgrid[0:h, 0:w]
    phase_y, phase_x = rng.integers(0, period_y), rng.integers(0, period_x)
    grid = ((yy + phase_y) % period_y < period_y // 2) & ((xx + phase_x) % period_x < period_x // 2)
    mask = grid & (scene.label == T["building"]) & (yy < scene.horizon)
    image[mask] = colour


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, bicubically upsampled."""
    coarse = rng.uniform(0, 255, size=cells).astype(np.uint8)
    up = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 127.5 - 1.0


def write_demo_data(config: DemoDataConfig, out_dir: Path) -> dict[str, int]:
    """The demo_data stage: a fresh `out_dir` (a smaller n_* leaves no stale frames of an
    earlier run) holding the frames `config` describes; returns the counts."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    spec = DemoSpec(
        seed=config.seed,
        n_source=config.n_source,
        n_target_train=config.n_target_train,
        n_target_val=config.n_target_val,
        size=config.size,
        synthia=config.synthia,
    )
    counts = generate(spec, out_dir, workers=config.workers)
    print(f"demo data written to {out_dir}: {counts}")
    return counts


# The one file of the demo folder when no dataset root lies inside it.
UNUSED_NOTE = "UNUSED.txt"


def write_demo_unused(out_dir: Path, roots: Sequence[Path]) -> None:
    """The demo_data stage when no root lies in `out_dir`: a fresh folder holding only a note."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / UNUSED_NOTE).write_text(
        "The demo frames are not generated: data.source.root and data.target.root "
        f"({', '.join(str(root) for root in roots)}) lie outside this folder.\n"
    )
    print(f"demo data not needed (both dataset roots lie outside {out_dir})")
