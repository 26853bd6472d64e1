"""Loading a Python file of the repository that is not part of a package (a tool, a filter plugin, the simulated
NVML's build script) as a module, for a test to call."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_file(path: Path, name: str) -> ModuleType:
    """The module of ``path``, registered as ``name`` in ``sys.modules`` (dataclasses and pickling look it up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be loaded as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
