"""Measurements of the pipeline's speed and quality; `python -m benchmarks --list` names them."""

import importlib.util
import sys
import types

# pipeline.tracking imports mlflow, which GPU machines without a package registry lack and no
# measurement calls: there an empty stand-in lets the training modules import.
if importlib.util.find_spec("mlflow") is None:
    sys.modules["mlflow"] = types.ModuleType("mlflow")
