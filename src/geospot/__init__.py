"""geospot: where was this photo taken?

The public surface is imported lazily so that `geospot locate` starts fast.
"""
from __future__ import annotations

import importlib
import os

# An offline tool sends nothing anywhere. ONNX Runtime >= 1.29 starts telemetry when it is imported
# (a device id and an event store under ~/.cache/Microsoft); this variable, read at that import, stops
# all of it (a user who sets it otherwise is obeyed). See docs/errors.md.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    "list_encoders": "geospot.encoders",
    "create_encoder": "geospot.encoders",
    "build_cells": "geospot.geo.cells",
    "CellTable": "geospot.geo.cells",
    "read_manifest": "geospot.data.manifest",
    "Manifest": "geospot.data.manifest",
    "GeoModel": "geospot.models.checkpoint",
    "Predictor": "geospot.predict",
    "Prediction": "geospot.predict",
    "fit": "geospot.pipeline",
    "evaluate": "geospot.pipeline",
    "cross_validate": "geospot.pipeline",
    "haversine_km": "geospot.geo.distance",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geospot' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["__version__"]
