"""GTA5 ("Playing for Data") reader: `images/NNNNN.png` with `labels/NNNNN.png`.

Labels are 8-bit palette PNGs whose indices are Cityscapes label ids. The real set has known
defects (frames without labels, image/label size mismatches, a few blank or truncated files);
indexing records the ones visible from file names, decoding (in prepare) the rest.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.index import DatasetIndex, index_flat_pairs


def index_gta5(root: str | Path, list_file: str | Path | None = None) -> DatasetIndex:
    """Pair every image with its label by file stem; a list file (one name a line) restricts it."""
    return index_flat_pairs(Path(root), "images", "labels", "GTA5", list_file)
