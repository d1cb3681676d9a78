"""Import a script of this repository that is not a package module (benchmarks/*.py), for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[3]


def load_script(relative_path: str, module_name: str) -> ModuleType:
    """The script at `relative_path` (from the repository's root), imported as `module_name`. Registered in
    sys.modules before it runs: dataclasses look their module up while a class is made."""
    spec = importlib.util.spec_from_file_location(module_name, REPO / relative_path)
    assert spec is not None and spec.loader is not None, relative_path
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
