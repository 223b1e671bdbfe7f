"""Measurements of the pipeline's speed and quality; `python -m benchmarks --list` names them.

pipeline.tracking imports mlflow, which no measurement calls and GPU machines without a package
registry lack. There, empty stand-ins (every attribute another stand-in) let the training modules
import; calling into one fails at once.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any, ClassVar


class _Absent(types.ModuleType):
    """mlflow, or one of its modules or names, when mlflow is not installed."""

    __path__: ClassVar[list[str]] = []  # a package: `from mlflow.entities import X` looks inside

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent(f"{self.__name__}.{name}")

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)  # `class Model(mlflow.pyfunc.PythonModel)` still defines a class

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.__name__}: mlflow is not installed here")


class _AbsentFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] == "mlflow":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Absent(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


if importlib.util.find_spec("mlflow") is None:
    sys.meta_path.append(_AbsentFinder())
