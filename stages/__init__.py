"""The DVC stages, one module each, run as `python -m stages.<name>` (dvc.yaml).

A stage process loads torch, timm, smp and MLflow: close to 900,000 objects (`train_seg`) that
live until it exits. Python's cyclic garbage collector scans them over and over while they load
and once more at exit, about 2 s of every stage's start-up and exit on 2 cores (docs/speed.md),
so in a stage process the collector is off while the modules load; the door freezes what they
made (`loaded`) and turns it back on before the stage works, and the process freezes its
objects again on the way out instead of scanning them. Nothing a stage computes depends on when
garbage is collected.
"""

from __future__ import annotations

import atexit
import gc
import sys

# `python -m stages.<name>`: while Python imports this package to find the module, argv[0] is
# "-m" (the docs of `python -m`). A process that only imports a stage (a test) is left alone.
STAGE_PROCESS = sys.argv[:1] == ["-m"]

if STAGE_PROCESS:
    gc.disable()
    # Registered first, so it runs last, after MLflow's and logging's exit handlers.
    atexit.register(gc.freeze)


def loaded() -> None:
    """The stage's modules are loaded: keep their objects out of every later collection and
    collect the garbage the stage itself makes, as usual."""
    if STAGE_PROCESS:
        gc.freeze()
        gc.enable()
