"""The `geoclip` package's own modules, imported without its top-level `__init__` (test-only helper).

`import geoclip` pulls its training code (geopy, torchvision); its model files
need only torch, pandas and (for the image side) transformers. Install with
`pip install --no-deps geoclip==1.3.0`; tests skip when it is absent.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

_PACKAGE = "_geoclip_reference"


def package_dir() -> Path:
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the geoclip package is not installed (pip install --no-deps geoclip==1.3.0)")
    return Path(next(iter(spec.submodule_search_locations)))


def module(name: str):
    """`geoclip.model.<name>` loaded from the installed package's files."""
    folder = package_dir() / "model"
    if _PACKAGE not in sys.modules:
        pkg = types.ModuleType(_PACKAGE)
        pkg.__path__ = [str(folder)]
        sys.modules[_PACKAGE] = pkg
    return importlib.import_module(f"{_PACKAGE}.{name}")
