"""Hierarchical answers: country, region (admin-1) and district (admin-2) probabilities from cell probabilities.

A cell's probability flows up to the countries, regions and districts its training
places lie in (GeoNames reverse geocoding, the labels OSV-5M uses), in
proportion to its places: a cell straddling a border with 70% of its places in
Croatia and 30% in Slovenia gives Croatia 70% of its mass. The shares are
computed once, when a model is saved (``hierarchy.json`` +
``hierarchy.safetensors`` in the model directory: aggregate shares only, no
coordinates). A model without them (e.g. older models) falls back to its
stored training places, else to each cell's centroid (the whole cell counts
for the country and region of its centroid; no districts then).

Districts "where the cells allow": a district key is ``"CC/admin1/admin2"``
(GeoNames admin-2; ``""`` for places GeoNames gives no admin-2, ~40% of them,
e.g. most of China and Germany's smaller towns). A cell *resolves* districts
when at least :data:`RESOLVE_SHARE` of its places lie in one named district; an
answer lists districts only when at least :data:`LISTED_MASS` of its
probability lies in such cells. Otherwise the cells are coarser than districts
there, and district probabilities would only repeat where the training photos
were, so ``districts`` is empty. Hierarchy files of format 1 (before
districts) still load, with no districts.

NumPy only (``probs [B, C] @ shares [C, K]`` as a sparse product over the
shares' (cell, index, share) triplets), so answering never imports SciPy;
``CellShares.country`` / ``.region`` give SciPy matrices for analysis.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

JSON_FILE = "hierarchy.json"
TENSORS_FILE = "hierarchy.safetensors"
_FORMAT = 2  # 2: districts (format 1 files load without them)
_SEP = "/"  # region key: "HR/Zagrebacka", district key: "HR/Dubrovacko-Neretvanska/Grad Korcula"
#: A cell resolves districts when at least this share of its places lie in one named district.
RESOLVE_SHARE = 0.5
#: An answer lists districts when at least this much of its probability lies in cells that resolve them.
LISTED_MASS = 0.5
_NO_TRIPLETS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def district_key(cc: str, admin1: str, admin2: str) -> str:
    """``"CC/admin1/admin2"``, or ``""`` for a place without a GeoNames district."""
    return f"{cc}{_SEP}{admin1}{_SEP}{admin2}" if cc and admin2 else ""


def admin_codes(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """ISO-2 country code and region key (``"CC/admin1"``) of each point; ``""`` for bad coordinates."""
    cc, region, _ = admin_labels(lat, lon)
    return cc, region


def admin_labels(lat, lon) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str, str]]]:
    """:func:`admin_codes` and each point's ``(CC, admin1, admin2)`` (``admin2`` ``""`` where GeoNames
    has none; all ``""`` for bad coordinates), from the nearest GeoNames place."""
    from geospot.geo.geocode import _nearest

    n = np.size(lat)
    ok, idx, gaz = _nearest(lat, lon)
    cc = np.full(n, "", dtype=object)
    region = np.full(n, "", dtype=object)
    parts = [("", "", "")] * n
    codes, admin1 = gaz.country_code[idx].tolist(), gaz.regions(idx)
    cc[ok] = codes
    region[ok] = [f"{c}{_SEP}{r}" for c, r in zip(codes, admin1)]
    for k, c, r, d in zip(ok.tolist(), codes, admin1, gaz.districts(idx)):
        parts[k] = (c, r, d)
    return cc, region, parts


@dataclass(eq=False)
class CellShares:
    """Share of each cell's training places in each country, region and district (sparse, rows sum to 1)."""

    cells_hash: str
    n_cells: int
    countries: list[str]  # ISO-2 codes
    regions: list[str]  # "CC/admin1" keys
    country_triplets: tuple  # (cell, country index, share): one entry per non-zero share
    region_triplets: tuple  # (cell, region index, share)
    source: str = "training places"
    # (CC, admin1, admin2) of each district column; ("", "", "") gathers places without one. Empty: no districts.
    district_parts: list = field(default_factory=list)
    district_triplets: tuple = _NO_TRIPLETS  # (cell, district index, share)

    @cached_property
    def districts(self) -> list[str]:
        """District keys ``"CC/admin1/admin2"`` (``""``: the column of places without a district)."""
        return [district_key(*p) for p in self.district_parts]

    @cached_property
    def named(self) -> np.ndarray:
        """[len(districts)] bool: the columns of named districts (not the ``""`` one)."""
        return np.array([bool(p[2]) for p in self.district_parts], dtype=bool)

    @cached_property
    def sorted_triplets(self) -> dict[str, tuple]:
        """Each kind's triplets sorted by column (`by_column`), once: every answer multiplies by them."""
        return {kind: by_column(getattr(self, f"{kind}_triplets")) for kind in ("country", "region", "district")}

    @property
    def has_districts(self) -> bool:
        return bool(self.district_parts)

    @property
    def district(self):
        """``scipy.sparse.csr_matrix [C, len(districts)]`` (imports SciPy)."""
        return _csr(self.district_triplets, (self.n_cells, len(self.district_parts)))

    def resolving(self) -> np.ndarray:
        """[C] bool: cells with at least :data:`RESOLVE_SHARE` of their places in one named district."""
        return self._resolving.copy()

    @cached_property
    def _resolving(self) -> np.ndarray:
        cell, index, share = self.district_triplets
        top = np.zeros(self.n_cells)
        if cell.size:
            keep = self.named[index]
            np.maximum.at(top, cell[keep], share[keep])
        return top >= RESOLVE_SHARE

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
        levels = [("country", self.country_triplets), ("region", self.region_triplets)]
        if self.has_districts:
            levels.append(("district", self.district_triplets))
        for name, (cell, index, share) in levels:
            tensors[f"{name}.cell"] = cell.astype(np.int64)
            tensors[f"{name}.index"] = index.astype(np.int64)
            tensors[f"{name}.share"] = share.astype(np.float32)
        meta = {"format_version": _FORMAT, "cells_hash": self.cells_hash, "n_cells": self.n_cells,
                "countries": self.countries, "regions": self.regions, "source": self.source,
                **({"districts": [list(p) for p in self.district_parts]} if self.has_districts else {})}
        (directory / JSON_FILE).write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")
        save_file(tensors, str(directory / TENSORS_FILE))

    @classmethod
    def load(cls, directory) -> "CellShares":
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / JSON_FILE).read_text(encoding="utf-8"))
            if int(meta.get("format_version", 1)) > _FORMAT:
                raise ValueError(f"format {meta['format_version']} is newer than this geospot reads ({_FORMAT})")
            t = load_file(str(directory / TENSORS_FILE))
            n = int(meta["n_cells"])
            parts = [tuple(str(x) for x in p) for p in meta.get("districts", [])]  # format 1: none
            if any(len(p) != 3 for p in parts):
                raise ValueError("districts must be [country, admin1, admin2] triples")
            triplets = []
            levels = [("country", meta["countries"]), ("region", meta["regions"])]
            for k, names in levels + ([("district", parts)] if parts else []):
                cell, index = t[f"{k}.cell"].astype(np.int64), t[f"{k}.index"].astype(np.int64)
                share = t[f"{k}.share"].astype(np.float64)
                if not (cell.shape == index.shape == share.shape and cell.ndim == 1):
                    raise ValueError(f"{k} arrays differ in shape")
                if cell.size and (cell.min() < 0 or cell.max() >= n or index.min() < 0 or index.max() >= len(names)):
                    raise ValueError(f"{k} indices out of range")
                triplets.append(_merged(cell, index, share, len(names)))
            return cls(str(meta["cells_hash"]), n, list(meta["countries"]), list(meta["regions"]), *triplets[:2],
                       source=str(meta.get("source", "training places")), district_parts=parts,
                       district_triplets=triplets[2] if parts else _NO_TRIPLETS)
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
    labels, inverse = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    cell, index, count = _merged(cell_idx.astype(np.int64), inverse.reshape(-1).astype(np.int64),
                                 np.ones(cell_idx.size), labels.size)
    totals = np.bincount(cell, weights=count, minlength=n_cells)
    return [str(x) for x in labels], (cell, index, count * (1.0 / np.maximum(totals, 1e-12))[cell])


def cell_shares(cells, lat=None, lon=None) -> CellShares:
    """Country/region/district shares of each cell from its training places (degrees).

    Cells without any of the given places (or every cell when ``lat`` is None)
    count wholly for the country and region of their centroid. District shares
    come from training places only: from centroids alone (``lat`` None) there
    are none, as a centroid says nothing about how a cell splits among districts.
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
    n_places = idx.size
    lat = np.concatenate([lat, cells.centroid_lat[empty]])
    lon = np.concatenate([lon, cells.centroid_lon[empty]])
    idx = np.concatenate([idx, empty])
    cc, region, parts = admin_labels(lat, lon)
    countries, country = _shares(idx, cc, n)
    regions, region_m = _shares(idx, region, n)
    district_parts, district_m = [], _NO_TRIPLETS
    if source == "training places":
        # Keys with a separator no GeoNames name holds, so the parts come back exactly.
        # Cells without places (their centroid stands in above) get no district: "" for those rows.
        keys = np.array(["\x1f".join(p) if p[2] and k < n_places else "" for k, p in enumerate(parts)],
                        dtype=object)
        labels, district_m = _shares(idx, keys, n)
        district_parts = [tuple(k.split("\x1f")) if k else ("", "", "") for k in labels]
    return CellShares(cells.hash(), n, countries, regions, country, region_m, source, district_parts, district_m)


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
    p = _checked(probs, shares)
    t = shares.sorted_triplets
    return (_product(p, shares.country_triplets, len(shares.countries), sorted_=t["country"]),
            _product(p, shares.region_triplets, len(shares.regions), sorted_=t["region"]))


def _checked(probs, shares: CellShares) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != shares.n_cells:
        raise ValueError(f"hierarchy: probs must be [B, {shares.n_cells}], got shape {p.shape}")
    return p


def by_column(triplets: tuple) -> tuple:
    """``(cell, share, starts, columns)``: (cell, index, share) triplets sorted by column, each column's
    run starting at ``starts`` (what `_product` reads; sort once per model, not once per answer)."""
    cell, index, share = (np.asarray(a) for a in triplets)
    order = np.argsort(index, kind="stable")
    cell, index, share = cell[order], index[order], share[order]
    starts = np.flatnonzero(np.concatenate([[True], index[1:] != index[:-1]])) if index.size else np.zeros(0, np.intp)
    return cell, share, starts, index[starts]


def _product(p: np.ndarray, triplets: tuple, width: int, chunk: int = 256, sorted_: tuple | None = None) -> np.ndarray:
    """``p @ M`` for the sparse ``M`` [C, width] given as (cell, index, share) triplets
    (``sorted_``: their `by_column`, when already known)."""
    cell, share, starts, columns = sorted_ if sorted_ is not None else by_column(triplets)
    out = np.zeros((p.shape[0], width))
    if cell.size == 0:
        return out
    for a in range(0, p.shape[0], chunk):  # [chunk, nnz] temporaries
        out[a:a + chunk, columns] = np.add.reduceat(p[a:a + chunk, cell] * share, starts, axis=1)
    return out


def _top(row: np.ndarray, k: int) -> np.ndarray:
    k = min(k, row.size)
    idx = np.argpartition(-row, k - 1)[:k] if k < row.size else np.arange(row.size)
    idx = idx[np.argsort(-row[idx], kind="stable")]
    return idx[row[idx] > 0]


def hierarchy_probs(probs, shares: CellShares, top: int = 5) -> tuple[list[list[dict]], list[list[dict]]]:
    """Per photo, the ``top`` most probable countries ``[{code, name, prob}]`` and regions
    ``[{code, name, country_code, prob}]`` (region ``code`` is ``"CC/admin1"``), most probable first."""
    country_p, region_p = hierarchy_matrices(probs, shares)
    cname = _country_names()

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


def _country_names():
    """Memoised ISO-2 -> country name ("" or unknown codes: the code itself)."""
    from geospot.geo.regions import country_name

    names: dict[str, str] = {}

    def cname(code: str) -> str:
        if code not in names:
            names[code] = country_name(code) or code
        return names[code]

    return cname


def district_matrix(probs, shares: CellShares) -> np.ndarray:
    """District probabilities ``[B, len(shares.districts)]`` (the ``""`` column: places without a district)."""
    p = _checked(probs, shares)
    t = shares.sorted_triplets["district"]
    return _product(p, shares.district_triplets, len(shares.district_parts), sorted_=t)


def districts_listed(probs, shares: CellShares) -> np.ndarray:
    """[B] bool: the answers whose cells allow districts (at least :data:`LISTED_MASS` of the probability
    in cells that resolve them, see the module doc); all False for shares without districts."""
    p = _checked(probs, shares)
    if not shares.has_districts:
        return np.zeros(p.shape[0], dtype=bool)
    total = p.sum(axis=1)
    return (p @ shares._resolving.astype(np.float64)) >= LISTED_MASS * np.where(total > 0, total, np.inf)


def district_name(parts: tuple, cname=None) -> str:
    """Readable district name: ``"Grad Korcula, Dubrovacko-Neretvanska, Croatia"`` (the admin-1 left out
    when empty or the same as the district)."""
    cc, admin1, admin2 = parts
    country = (cname or _country_names())(cc)
    return ", ".join(x for x in (admin2, "" if admin1 == admin2 else admin1, country) if x)


def district_probs(probs, shares: CellShares, top: int = 5) -> list[list[dict]]:
    """Per photo, the ``top`` most probable named districts ``[{code, name, region, country_code, prob}]``
    (``code`` ``"CC/admin1/admin2"``, ``name`` readable, ``region`` the admin-1 name), most probable first;
    an empty list where the cells do not allow districts (:func:`districts_listed`)."""
    district_p = district_matrix(probs, shares)
    listed = districts_listed(probs, shares)
    named, cname = shares.named, _country_names()
    out = []
    for b in range(district_p.shape[0]):
        rows = []
        if listed[b]:
            for j in _top(np.where(named, district_p[b], 0.0), top):
                part = shares.district_parts[j]
                rows.append({"code": district_key(*part), "name": district_name(part, cname), "region": part[1],
                             "country_code": part[0], "prob": round(float(district_p[b, j]), 6)})
        out.append(rows)
    return out


def district_argmax(probs, shares: CellShares) -> np.ndarray:
    """Most probable named district key per photo (object array; ``""`` when no named district has
    probability, or the shares have none), whether or not the answer would list districts."""
    district_p = district_matrix(probs, shares)
    out = np.full(district_p.shape[0], "", dtype=object)
    named = shares.named
    if not named.any():
        return out
    masked = np.where(named, district_p, -1.0)
    best = np.argmax(masked, axis=1)
    hit = masked[np.arange(len(best)), best] > 0
    out[hit] = [district_key(*shares.district_parts[j]) for j in best[hit].tolist()]
    return out
