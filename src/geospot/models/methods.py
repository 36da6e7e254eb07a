"""The optional parts of a model directory that change its answers, read without torch.

* ``refine``: PIGEON's prototypes or a kNN gallery of training images
  (`geospot.models.refine`), stored as ``prototypes.safetensors`` +
  ``prototypes.json``; ``config.json`` says which: ``"refine": {"method":
  "prototypes"|"knn", "file": "prototypes.safetensors"}``.
* ``hybrid``: OSV-5M's per-cell offset regression (`geospot.models.hybrid`),
  ``hybrid.safetensors`` + ``hybrid.json``; ``"hybrid": "hybrid.safetensors"``.
* ``aux``: auxiliary heads (`geospot.models.aux`).

`refined_points` applies the first two to a head's answer: the hybrid head
moves the top cell's centroid by its regressed offset, then the refiner moves
the answer to the best prototype / training image of the top cells (within
its maximum distance). Both run in NumPy, for `GeoModel` and `NumpyGeoModel`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFINERS = ("prototypes", "knn")
HYBRID_FILE = "hybrid.safetensors"


@dataclass
class HybridNumpy:
    """The hybrid head's stored arrays: ``weight [2C, D]``, ``bias [2C]``, ``scale_km [C]``."""

    weight: np.ndarray
    bias: np.ndarray
    scale_km: np.ndarray

    @classmethod
    def from_torch(cls, head) -> "HybridNumpy":
        st = head.state_dict()
        return cls(st["linear.weight"].numpy().astype(np.float32), st["linear.bias"].numpy().astype(np.float32),
                   st["scale_km"].numpy().astype(np.float64))

    def estimate(self, emb, cell_idx, cells, max_scales: float = 2.0):
        """As `geospot.models.hybrid.hybrid_estimate`, in NumPy."""
        from geospot.geo.tangent import destination

        x = np.asarray(emb, np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        idx = np.asarray(cell_idx, np.int64)
        rows = np.stack([2 * idx, 2 * idx + 1], 1)  # the cell's (east, north) outputs
        pred = (np.einsum("bd,bkd->bk", x, self.weight[rows]) + self.bias[rows]).astype(np.float64)
        norm = np.linalg.norm(pred, axis=1, keepdims=True)
        pred = pred * np.minimum(max_scales / np.maximum(norm, max_scales), 1.0)
        return destination(cells.centroid_lat[idx], cells.centroid_lon[idx], pred * self.scale_km[idx][:, None])


def read_methods(root: Path, config: dict, cells):
    """``(refine_method or None, Prototypes or None, HybridNumpy or None)`` named in ``config.json``."""
    from geospot.models.checkpoint import CheckpointError
    from geospot.models.refine import Prototypes

    where = root / "config.json"
    method = protos = hybrid = None
    section = config.get("refine")
    if section is not None:
        if not isinstance(section, dict) or section.get("method") not in REFINERS \
                or section.get("file") != Prototypes.TENSORS:
            raise CheckpointError(f"{where}: 'refine' must be {{'method': 'prototypes'|'knn', "
                                  f"'file': '{Prototypes.TENSORS}'}}, got {section!r}")
        try:
            protos = Prototypes.load(root, cells)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        if protos.emb.shape[1] != config["head"]["embed_dim"] or not np.isfinite(protos.emb).all() \
                or protos.cell.min(initial=0) < 0 or protos.cell.max(initial=0) >= len(cells):
            raise CheckpointError(f"{root / Prototypes.TENSORS}: embeddings or cells do not match the model")
        method = section["method"]
    if config.get("hybrid") is not None:
        if config["hybrid"] != HYBRID_FILE:
            raise CheckpointError(f"{where}: 'hybrid' must be {HYBRID_FILE!r} or absent")
        hybrid = _read_hybrid(root, config, cells)
    return method, protos, hybrid


def _read_hybrid(root: Path, config: dict, cells) -> HybridNumpy:
    from safetensors.numpy import load_file

    from geospot.models.checkpoint import CheckpointError

    path = root / HYBRID_FILE
    try:
        meta = json.loads((root / "hybrid.json").read_text(encoding="utf-8"))
        t = load_file(str(path))
        h = HybridNumpy(t["linear.weight"].astype(np.float32), t["linear.bias"].astype(np.float32),
                        t["scale_km"].astype(np.float64))
    except Exception as exc:  # missing, truncated or garbled files
        raise CheckpointError(f"{path}: unreadable hybrid head ({exc})") from None
    c, d = len(cells), config["head"]["embed_dim"]
    if meta.get("cells_hash") != cells.hash():
        raise CheckpointError(f"{root / 'hybrid.json'}: built for another cell table")
    if h.weight.shape != (2 * c, d) or h.bias.shape != (2 * c,) or h.scale_km.shape != (c,) \
            or not all(np.isfinite(a).all() for a in (h.weight, h.bias, h.scale_km)):
        raise CheckpointError(f"{path}: shapes {h.weight.shape}/{h.bias.shape}/{h.scale_km.shape} or values do not "
                              f"match {c} cells of {d}-d embeddings")
    return h


def refined_points(model, emb, probs, lat, lon, keep=None):
    """``(lat, lon, name)``: the answer after the model's hybrid head and refiner (unchanged, ``""`` without).
    ``keep`` ([B] bool, e.g. the familiarity gate's unfamiliar rows): those rows keep ``lat``/``lon``
    (refining inside a cell the photo does not resemble adds nothing)."""
    hybrid, protos = getattr(model, "hybrid", None), getattr(model, "refiner", None)
    names = []
    lat0, lon0 = lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    if hybrid is not None:
        lat, lon = hybrid.estimate(emb, np.asarray(probs).argmax(1), model.cells)
        names.append("hybrid")
    if protos is not None:
        from geospot.models.refine import refine

        lat, lon, _ = refine(probs, emb, protos, lat, lon)
        names.append(getattr(model, "refine_method", None) or "prototypes")
    if keep is not None and names:
        lat, lon = np.where(keep, lat0, lat), np.where(keep, lon0, lon)
    return lat, lon, "+".join(names)


def save_methods(model, directory: Path) -> dict:
    """Write the model's refiner / hybrid head into ``directory``; the ``config.json`` keys that name them."""
    keys: dict = {}
    protos = getattr(model, "refiner", None)
    if protos is not None:
        protos.save(directory)
        keys["refine"] = {"method": getattr(model, "refine_method", None) or "prototypes", "file": protos.TENSORS}
    hybrid = getattr(model, "hybrid", None)
    if hybrid is not None:
        from safetensors.numpy import save_file

        save_file({"linear.weight": np.ascontiguousarray(hybrid.weight, np.float32),
                   "linear.bias": np.ascontiguousarray(hybrid.bias, np.float32),
                   "scale_km": np.ascontiguousarray(hybrid.scale_km, np.float64)}, str(directory / HYBRID_FILE))
        (directory / "hybrid.json").write_text(json.dumps({"format_version": 1, "embed_dim": int(hybrid.weight.shape[1]),
                                                           "num_cells": int(hybrid.scale_km.shape[0]),
                                                           "cells_hash": model.cells.hash()}) + "\n")
        keys["hybrid"] = HYBRID_FILE
    return keys


def knn_gallery(emb, lat, lon, cells):
    """A kNN refiner: every training image as its own 'prototype' (same storage as prototypes)."""
    from geospot.models.refine import Prototypes, l2_normalize

    lat = np.asarray(lat, np.float64)
    lon = np.asarray(lon, np.float64)
    return Prototypes(l2_normalize(emb), lat, lon, cells.assign(lat, lon, nearest=True).astype(np.int64),
                      np.ones(lat.size, np.int64), cells.hash(), 0.0)
