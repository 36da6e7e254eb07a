"""CellTable: the geographic classes of a model, with assignment, outlines and storage."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..distance import latlon_to_xyz
from . import grid, s2, semantic

SCHEMES = ("grid-square", "grid-hex", "s2", "semantic")
#: The params entry holding one value per cell, by scheme (grids: "cell_key").
_CELL_PARAM = {"s2": "cell_id", "semantic": "cell_group"}
_JSON_NAME = "cells.json"
_TENSORS_NAME = "cells.safetensors"
_FORMAT_VERSION = 1


def valid_coordinates(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """True where a coordinate pair is finite and inside [-90, 90] x [-180, 180]."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)


def cell_keys(scheme: str, params: dict, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Scheme-specific sort keys of the cells holding each (valid) point."""
    if scheme == "grid-square":
        return grid.square_keys(params, lat, lon)
    if scheme == "grid-hex":
        return grid.hex_keys(params, lat, lon)
    raise ValueError(f"unknown cell scheme {scheme!r}")


@dataclass(eq=False)
class CellTable:
    """The classes of a geolocation model: cells with ids, centroids and point counts.

    ``params`` holds everything needed to re-assign points: JSON-able values
    (ints, floats, strings, lists) and NumPy arrays (e.g. the sorted S2 cell
    ids as ``uint64`` under ``"cell_id"``, or the grid keys under
    ``"cell_key"``; semantic cells: ``"cell_group"`` and the GeoNames places).
    ``names``: optional human-readable cell names (semantic cells: "Zagrebacka,
    Croatia"); absent from tables of other schemes and from old checkpoints,
    and part of the hash only when present.
    """

    scheme: str
    ids: list[str]
    centroid_lat: np.ndarray
    centroid_lon: np.ndarray
    count: np.ndarray
    params: dict = field(default_factory=dict)
    names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown cell scheme {self.scheme!r}; expected one of {', '.join(SCHEMES)}")
        self.ids = [str(i) for i in self.ids]
        self.centroid_lat = np.asarray(self.centroid_lat, dtype=np.float64).reshape(-1)
        self.centroid_lon = np.asarray(self.centroid_lon, dtype=np.float64).reshape(-1)
        self.count = np.asarray(self.count, dtype=np.int64).reshape(-1)
        n = len(self.ids)
        sizes = {"centroid_lat": self.centroid_lat.size, "centroid_lon": self.centroid_lon.size,
                 "count": self.count.size}
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"CellTable: {n} ids but " + ", ".join(f"{k} has {v}" for k, v in bad.items()))
        if len(set(self.ids)) != n:
            raise ValueError("CellTable: cell ids are not unique")
        key = _CELL_PARAM.get(self.scheme, "cell_key")
        if key not in self.params or np.asarray(self.params[key]).size != n:
            raise ValueError(f"CellTable: params[{key!r}] must hold one entry per cell ({n})")
        if self.names is not None:
            self.names = [str(x) for x in self.names]
            if len(self.names) != n:
                raise ValueError(f"CellTable: {n} ids but {len(self.names)} names")
        self._tree = None
        self._semantic = None  # semantic.Assigner, built on first use

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"CellTable(scheme={self.scheme!r}, cells={len(self)}, points={int(self.count.sum())})"

    # --- assignment ---------------------------------------------------------------------

    def assign(self, lat, lon, nearest: bool = False) -> np.ndarray:
        """Index of the cell containing each point (degrees in), ``np.int64 [M]``.

        Points in no cell get -1, or with ``nearest=True`` the cell whose
        centroid is nearest on the sphere. NaN or out-of-range coordinates
        always get -1.
        """
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        if lat.shape != lon.shape:
            raise ValueError(f"assign: lat and lon lengths differ ({lat.size} vs {lon.size})")
        out = np.full(lat.size, -1, dtype=np.int64)
        ok = valid_coordinates(lat, lon)
        if not ok.any() or len(self) == 0:
            return out
        if ok.all():
            out = self._assign_valid(lat, lon)
        else:
            out[ok] = self._assign_valid(lat[ok], lon[ok])
        if nearest:
            missing = np.flatnonzero(ok & (out < 0))
            if missing.size:
                out[missing] = self.nearest_centroid(lat[missing], lon[missing])
        return out

    def _assign_valid(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        if self.scheme == "s2":
            return s2.assign_sorted(self.params["cell_id"], lat, lon)
        if self.scheme == "semantic":
            return self._semantic_assigner()(lat, lon)
        keys = cell_keys(self.scheme, self.params, lat, lon)
        table_keys = self.params["cell_key"]
        idx = np.searchsorted(table_keys, keys)
        safe = np.minimum(idx, len(table_keys) - 1)
        return np.where(table_keys[safe] == keys, safe, -1).astype(np.int64)

    def _semantic_assigner(self) -> "semantic.Assigner":
        if self._semantic is None:
            self._semantic = semantic.Assigner(self.params)
        return self._semantic

    def nearest_centroid(self, lat, lon) -> np.ndarray:
        """Index of the cell whose centroid is nearest (great-circle) to each point."""
        from scipy.spatial import cKDTree

        if self._tree is None:
            # Chord length between unit vectors is monotone in great-circle distance.
            self._tree = cKDTree(latlon_to_xyz(self.centroid_lat, self.centroid_lon))
        _, idx = self._tree.query(latlon_to_xyz(np.asarray(lat, np.float64), np.asarray(lon, np.float64)))
        return np.asarray(idx, dtype=np.int64)

    # --- geometry -----------------------------------------------------------------------

    def bounds(self) -> np.ndarray:
        """``[N, 4]`` boxes ``(lat_min, lat_max, lon_min, lon_max)`` containing each cell.

        A cell crossing the antimeridian has ``lon_min > lon_max``.
        """
        if self.scheme == "s2":
            return s2.cell_bounds(self.params["cell_id"])
        if self.scheme == "semantic":
            return semantic.bounds(self.polygons())
        if self.scheme == "grid-square":
            return grid.square_bounds(self.params)
        return grid.hex_bounds(self.params)

    def polygons(self) -> list[list[tuple[float, float]]]:
        """Cell outlines as open rings of ``(lat, lon)`` corners, counter-clockwise.

        Square cells and S2 cells have 4 corners (S2 edges are great-circle
        arcs between them), hexagons 6. Semantic cells: the spherical convex
        hull of the GeoNames places in the cell (an outline for maps, not the
        exact assignment boundary; see ``semantic.polygons``).
        """
        if self.scheme == "semantic":
            return semantic.polygons(self.params, len(self), self._semantic_assigner())
        if self.scheme == "s2":
            lat, lon = s2.cell_vertices(self.params["cell_id"])
            return [list(zip(a, b)) for a, b in zip(lat.tolist(), lon.tolist())]
        if self.scheme == "grid-square":
            return grid.square_polygons(self.params)
        return grid.hex_polygons(self.params)

    # --- identity and storage -----------------------------------------------------------

    def _split_params(self) -> tuple[dict, dict[str, np.ndarray]]:
        scalars, arrays = {}, {}
        for key, value in self.params.items():
            if isinstance(value, np.ndarray):
                arrays[key] = value
            elif isinstance(value, np.generic):
                scalars[key] = value.item()
            else:
                scalars[key] = value
        return scalars, arrays

    def hash(self) -> str:
        """sha256 (hex) of scheme, ids, centroids, counts and params; stable across save/load."""
        scalars, arrays = self._split_params()
        h = hashlib.sha256()
        head = {"scheme": self.scheme, "ids": self.ids, "params": scalars}
        if self.names is not None:  # only when present, so tables without names keep their old hashes
            head["names"] = self.names
        h.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
        for name, arr in [("centroid_lat", self.centroid_lat), ("centroid_lon", self.centroid_lon),
                          ("count", self.count)] + sorted(arrays.items()):
            arr = np.ascontiguousarray(arr)
            h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return h.hexdigest()

    def save(self, directory) -> None:
        """Write ``cells.json`` (scheme, ids, params) and ``cells.safetensors`` (arrays) into ``directory``."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        scalars, arrays = self._split_params()
        tensors = {"centroid_lat": self.centroid_lat, "centroid_lon": self.centroid_lon, "count": self.count}
        dtypes = {}
        for key, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            dtypes[key] = arr.dtype.str
            # safetensors has no uint64 in every consumer; store its bits as int64.
            tensors[f"params.{key}"] = arr.view(np.int64) if arr.dtype == np.uint64 else arr
        meta = {"format_version": _FORMAT_VERSION, "scheme": self.scheme, "ids": self.ids,
                "params": scalars, "array_params": dtypes, "hash": self.hash()}
        if self.names is not None:
            meta["names"] = self.names
        (directory / _JSON_NAME).write_text(json.dumps(meta, indent=1) + "\n")
        save_file(tensors, str(directory / _TENSORS_NAME))

    @classmethod
    def load(cls, directory) -> "CellTable":
        """Read a table written by :meth:`save`; raises ``ValueError`` naming the file on damage."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        json_path, tensor_path = directory / _JSON_NAME, directory / _TENSORS_NAME
        for path in (json_path, tensor_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing (a cell table needs {_JSON_NAME} and {_TENSORS_NAME})")
        try:
            meta = json.loads(json_path.read_text())
            scheme, ids = meta["scheme"], meta["ids"]
            params = dict(meta.get("params", {}))
            dtypes = meta.get("array_params", {})
            names = meta.get("names")
            if names is not None and not isinstance(names, list):
                raise TypeError("'names' is not a list")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{json_path}: not a cell table ({exc})") from exc
        try:
            tensors = load_file(str(tensor_path))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{tensor_path}: unreadable ({exc})") from exc
        for key, dtype in dtypes.items():
            name = f"params.{key}"
            if name not in tensors:
                raise ValueError(f"{tensor_path}: tensor {name!r} missing")
            arr = tensors[name]
            params[key] = arr.view(np.uint64) if np.dtype(dtype) == np.uint64 else arr.astype(np.dtype(dtype))
        missing = [k for k in ("centroid_lat", "centroid_lon", "count") if k not in tensors]
        if missing:
            raise ValueError(f"{tensor_path}: tensors missing: {', '.join(missing)}")
        try:
            table = cls(scheme, ids, tensors["centroid_lat"], tensors["centroid_lon"], tensors["count"], params,
                        names)
        except ValueError as exc:
            raise ValueError(f"{directory}: {exc}") from exc
        stored = meta.get("hash")
        if stored is not None and stored != table.hash():
            raise ValueError(f"{json_path}: hash mismatch (stored {stored[:12]}, computed {table.hash()[:12]}); "
                             "the files do not belong together or were modified")
        return table
