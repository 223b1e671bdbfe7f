"""Which computation produced a folder of outputs: its settings, the pipeline's code, its inputs.

DVC keeps some outputs between runs on purpose (checkpoint folders, translated frames) so a killed
stage resumes where it stopped. A stage that DVC reruns because its settings, code or data changed
must start over instead; comparing a fingerprint recorded beside the outputs with the current one
tells the two cases apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def run_fingerprint(settings: Mapping[str, Any], inputs: Sequence[str | Path]) -> str:
    """Hash of the settings, the pipeline package's source and the inputs' identity.

    Inputs are identified by their size and, for small files (names.json), their bytes: cheap on
    the real sets, and a re-prepared split changes its names or sizes.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for source in sorted(_PACKAGE.rglob("*.py")):
        digest.update(source.relative_to(_PACKAGE).as_posix().encode())
        digest.update(source.read_bytes())
    for item in inputs:
        for path in sorted(Path(item).rglob("*")) if Path(item).is_dir() else [Path(item)]:
            if path.is_file():
                digest.update(f"{path.name}:{path.stat().st_size}".encode())
                if path.stat().st_size < 1 << 20:
                    digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
