"""Hierarchical answers: country and region (admin-1) probabilities from cell probabilities.

A cell's probability flows up to the countries and regions its training
places lie in (GeoNames reverse geocoding, the labels OSV-5M uses), in
proportion to its places: a cell straddling a border with 70% of its places in
Croatia and 30% in Slovenia gives Croatia 70% of its mass. The shares are
computed once, when a model is saved (``hierarchy.json`` +
``hierarchy.safetensors`` in the model directory: aggregate shares only, no
coordinates). A model without them (e.g. older models) falls back to its
stored training places, else to each cell's centroid (the whole cell counts
for the country and region of its centroid).

NumPy only (``probs [B, C] @ shares [C, K]`` as a sparse product over the
shares' (cell, index, share) triplets), so answering never imports SciPy;
``CellShares.country`` / ``.region`` give SciPy matrices for analysis.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JSON_FILE = "hierarchy.json"
TENSORS_FILE = "hierarchy.safetensors"
_FORMAT = 1
_SEP = "/"  # region key: "HR/Zagrebacka"


def admin_codes(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """ISO-2 country code and region key (``"CC/admin1"``) of each point; ``""`` for bad coordinates."""
    from geospot.geo.geocode import _nearest

    n = np.size(lat)
    ok, idx, gaz = _nearest(lat, lon)
    cc = np.full(n, "", dtype=object)
    region = np.full(n, "", dtype=object)
    cc[ok] = gaz.country_code[idx]
    region[ok] = [f"{c}{_SEP}{r}" for c, r in zip(gaz.country_code[idx].tolist(), gaz.regions(idx))]
    return cc, region


@dataclass(eq=False)
class CellShares:
    """Share of each cell's training places in each country and region (sparse, rows sum to 1)."""

    cells_hash: str
    n_cells: int
    countries: list[str]  # ISO-2 codes
    regions: list[str]  # "CC/admin1" keys
    country_triplets: tuple  # (cell, country index, share): one entry per non-zero share
    region_triplets: tuple  # (cell, region index, share)
    source: str = "training places"

    @property
    def country(self):
        """``scipy.sparse.csr_matrix [C, len(countries)]`` (imports SciPy)."""
        return _csr(self.country_triplets, (self.n_cells, len(self.countries)))

    @property
    def region(self):
        """``scipy.sparse.csr_matrix [C, len(regions)]`` (imports SciPy)."""
        return _csr(self.region_triplets, (self.n_cells, len(self.regions)))

    def save(self, directory) -> None:
        from safetensors.numpy import save_file

        directory = Path(directory)
        tensors = {}
        for name, (cell, index, share) in (("country", self.country_triplets), ("region", self.region_triplets)):
            tensors[f"{name}.cell"] = cell.astype(np.int64)
            tensors[f"{name}.index"] = index.astype(np.int64)
            tensors[f"{name}.share"] = share.astype(np.float32)
        meta = {"format_version": _FORMAT, "cells_hash": self.cells_hash, "n_cells": self.n_cells,
                "countries": self.countries, "regions": self.regions, "source": self.source}
        (directory / JSON_FILE).write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")
        save_file(tensors, str(directory / TENSORS_FILE))

    @classmethod
    def load(cls, directory) -> "CellShares":
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / JSON_FILE).read_text(encoding="utf-8"))
            t = load_file(str(directory / TENSORS_FILE))
            n = int(meta["n_cells"])
            triplets = []
            for k, names in (("country", meta["countries"]), ("region", meta["regions"])):
                cell, index = t[f"{k}.cell"].astype(np.int64), t[f"{k}.index"].astype(np.int64)
                share = t[f"{k}.share"].astype(np.float64)
                if not (cell.shape == index.shape == share.shape and cell.ndim == 1):
                    raise ValueError(f"{k} arrays differ in shape")
                if cell.size and (cell.min() < 0 or cell.max() >= n or index.min() < 0 or index.max() >= len(names)):
                    raise ValueError(f"{k} indices out of range")
                triplets.append(_merged(cell, index, share, len(names)))
            return cls(str(meta["cells_hash"]), n, list(meta["countries"]), list(meta["regions"]), *triplets,
                       source=str(meta.get("source", "training places")))
        except Exception as exc:  # json, safetensors and shape errors alike
            raise ValueError(f"{directory / JSON_FILE}: unreadable hierarchy shares ({exc})") from exc


def _merged(cell: np.ndarray, index: np.ndarray, share: np.ndarray, width: int) -> tuple:
    """Triplets sorted by (cell, index), duplicates summed (as a SciPy matrix would hold them)."""
    key = cell * max(width, 1) + index
    uniq, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse.reshape(-1), weights=share, minlength=uniq.size)
    return uniq // max(width, 1), uniq % max(width, 1), total


def _csr(triplets: tuple, shape: tuple):
    from scipy.sparse import csr_matrix

    cell, index, share = triplets
    return csr_matrix((share, (cell, index)), shape=shape)


def _shares(cell_idx: np.ndarray, keys: np.ndarray, n_cells: int):
    labels, inverse = np.unique(keys.astype(str), return_inverse=True)
    cell, index, count = _merged(cell_idx.astype(np.int64), inverse.reshape(-1).astype(np.int64),
                                 np.ones(cell_idx.size), labels.size)
    totals = np.bincount(cell, weights=count, minlength=n_cells)
    return [str(x) for x in labels], (cell, index, count * (1.0 / np.maximum(totals, 1e-12))[cell])


def cell_shares(cells, lat=None, lon=None) -> CellShares:
    """Country/region shares of each cell from its training places (degrees).

    Cells without any of the given places (or every cell when ``lat`` is None)
    count wholly for the country and region of their centroid.
    """
    n = len(cells)
    if lat is None or lon is None:
        lat, lon = np.zeros(0), np.zeros(0)
        source = "cell centroids"
    else:
        source = "training places"
    lat = np.asarray(lat, np.float64).reshape(-1)
    lon = np.asarray(lon, np.float64).reshape(-1)
    idx = cells.assign(lat, lon, nearest=True) if lat.size else np.zeros(0, np.int64)
    ok = idx >= 0
    lat, lon, idx = lat[ok], lon[ok], idx[ok]
    empty = np.flatnonzero(np.bincount(idx, minlength=n) == 0)
    lat = np.concatenate([lat, cells.centroid_lat[empty]])
    lon = np.concatenate([lon, cells.centroid_lon[empty]])
    idx = np.concatenate([idx, empty])
    cc, region = admin_codes(lat, lon)
    countries, country = _shares(idx, cc, n)
    regions, region_m = _shares(idx, region, n)
    return CellShares(cells.hash(), n, countries, regions, country, region_m, source)


def model_shares(model_dir, cells, train_coords=None) -> CellShares:
    """The shares saved with a model, else computed from its training places, else from its centroids.

    Saved shares built for another cell table raise ``ValueError`` naming the file.
    """
    directory = Path(model_dir)
    if (directory / JSON_FILE).is_file():
        shares = CellShares.load(directory)
        if shares.cells_hash != cells.hash() or shares.n_cells != len(cells):
            raise ValueError(f"{directory / JSON_FILE}: built for another cell table (hash {shares.cells_hash[:12]}, "
                             f"model cells {cells.hash()[:12]})")
        return shares
    if train_coords is not None:
        return cell_shares(cells, train_coords[0], train_coords[1])
    return cell_shares(cells)


def hierarchy_matrices(probs, shares: CellShares) -> tuple[np.ndarray, np.ndarray]:
    """Country ``[B, len(countries)]`` and region ``[B, len(regions)]`` probabilities (rows sum like ``probs``)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != shares.n_cells:
        raise ValueError(f"hierarchy: probs must be [B, {shares.n_cells}], got shape {p.shape}")
    return (_product(p, shares.country_triplets, len(shares.countries)),
            _product(p, shares.region_triplets, len(shares.regions)))


def _product(p: np.ndarray, triplets: tuple, width: int, chunk: int = 256) -> np.ndarray:
    """``p @ M`` for the sparse ``M`` [C, width] given as (cell, index, share) triplets."""
    cell, index, share = triplets
    out = np.zeros((p.shape[0], width))
    if cell.size == 0:
        return out
    order = np.argsort(index, kind="stable")
    cell, index, share = cell[order], index[order], share[order]
    starts = np.flatnonzero(np.concatenate([[True], index[1:] != index[:-1]]))
    for a in range(0, p.shape[0], chunk):  # [chunk, nnz] temporaries
        out[a:a + chunk, index[starts]] = np.add.reduceat(p[a:a + chunk, cell] * share, starts, axis=1)
    return out


def _top(row: np.ndarray, k: int) -> np.ndarray:
    k = min(k, row.size)
    idx = np.argpartition(-row, k - 1)[:k] if k < row.size else np.arange(row.size)
    idx = idx[np.argsort(-row[idx], kind="stable")]
    return idx[row[idx] > 0]


def hierarchy_probs(probs, shares: CellShares, top: int = 5) -> tuple[list[list[dict]], list[list[dict]]]:
    """Per photo, the ``top`` most probable countries ``[{code, name, prob}]`` and regions
    ``[{code, name, country_code, prob}]`` (region ``code`` is ``"CC/admin1"``), most probable first."""
    from geospot.geo.regions import country_name

    country_p, region_p = hierarchy_matrices(probs, shares)
    names: dict[str, str] = {}

    def cname(code: str) -> str:
        if code not in names:
            names[code] = country_name(code) or code
        return names[code]

    countries, regions = [], []
    for b in range(country_p.shape[0]):
        countries.append([{"code": shares.countries[j], "name": cname(shares.countries[j]),
                           "prob": round(float(country_p[b, j]), 6)} for j in _top(country_p[b], top)])
        rows = []
        for j in _top(region_p[b], top):
            code, _, name = shares.regions[j].partition(_SEP)
            rows.append({"code": shares.regions[j], "name": name, "country_code": code,
                         "prob": round(float(region_p[b, j]), 6)})
        regions.append(rows)
    return countries, regions


def hierarchy_argmax(probs, shares: CellShares) -> tuple[np.ndarray, np.ndarray]:
    """Most probable country code and region key per photo (object arrays), for accuracy metrics."""
    country_p, region_p = hierarchy_matrices(probs, shares)
    c = np.asarray(shares.countries, dtype=object)[np.argmax(country_p, axis=1)]
    r = np.asarray(shares.regions, dtype=object)[np.argmax(region_p, axis=1)]
    return c, r
