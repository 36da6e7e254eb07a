"""Retrieval: k-nearest-neighbour geolocation and PIGEON's prototype refinement (NumPy; FAISS optional).

* :class:`Gallery` — L2-normalised training embeddings with their coordinates
  and a cosine-similarity search: exact NumPy (blocked matrix product) for
  small galleries, FAISS for large ones (``pip install geospot[retrieval]``;
  ``backend="auto"`` switches at :data:`FAISS_MIN_ROWS`, set from
  ``benchmarks/bench_retrieval.py``; exact ``IndexFlatIP``, or ``hnsw=True``
  for an approximate graph index).
* :func:`knn_locate` — a model of its own (GeoCLIP's gallery idea): the
  neighbours vote with ``exp(sim / T)``; the answer is the weighted spherical
  mean of the neighbours within ``local_km`` of the best-supported neighbour
  (a mode, so two rival places are not averaged into the sea between them).
* :class:`Prototypes` + :func:`refine` — PIGEON's ProtoNets: inside each cell,
  training places are clustered (greedy leader clustering with radius
  ``radius_km``; PIGEON uses OPTICS) into prototypes whose embedding is the
  mean of their images. A photo is refined to the prototype of its top-k cells
  maximising ``log P(cell) + sim / T``, unless that prototype is more than
  ``max_km`` from the head's estimate (then the head's estimate stands).
  :func:`knn_refine` does the same over single training images.

Model-directory storage: ``prototypes.safetensors`` (``emb`` float16 [P, D],
``lat``, ``lon`` float64, ``cell``, ``count`` int64) + ``prototypes.json``
(cells hash, radius); a kNN gallery is the same format with one row per image.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geospot.geo.distance import haversine_km, latlon_to_xyz, xyz_to_latlon

#: ``backend="auto"`` uses FAISS from this many rows. Measured (docs/methods.md): exact NumPy search was
#: as fast as or faster than FAISS's exact flat index up to 100k rows of 1280-d embeddings on a laptop-class CPU.
FAISS_MIN_ROWS = 1_000_000
_SIMS_BUDGET = 1 << 25  # similarities held at once by the NumPy search (128 MB of float32)


def l2_normalize(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@dataclass(eq=False)
class Gallery:
    """Embeddings ``[N, D]`` (normalised on construction) with coordinates; cosine search."""

    emb: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    backend: str = "auto"  # "numpy", "faiss" or "auto"
    hnsw: bool = False

    def __post_init__(self):
        self.emb = l2_normalize(self.emb)
        self.lat = np.asarray(self.lat, np.float64).reshape(-1)
        self.lon = np.asarray(self.lon, np.float64).reshape(-1)
        if not (len(self.emb) == self.lat.size == self.lon.size):
            raise ValueError(f"Gallery: {len(self.emb)} embeddings but {self.lat.size} lat, {self.lon.size} lon")
        if self.backend not in ("numpy", "faiss", "auto"):
            raise ValueError(f"Gallery: backend must be 'numpy', 'faiss' or 'auto', got {self.backend!r}")
        if self.backend == "faiss" and _faiss() is None:
            raise ImportError("Gallery: backend 'faiss' needs faiss-cpu (pip install 'geospot[retrieval]')")
        self._index = None

    def __len__(self) -> int:
        return len(self.emb)

    def uses_faiss(self) -> bool:
        if self.backend == "auto":
            return len(self) >= FAISS_MIN_ROWS and _faiss() is not None
        return self.backend == "faiss"

    def search(self, query, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities and indices ``[B, k]`` of the ``k`` nearest rows, most similar first."""
        q = l2_normalize(query)
        if q.ndim != 2 or q.shape[1] != self.emb.shape[1]:
            raise ValueError(f"Gallery.search: queries must be [B, {self.emb.shape[1]}], got {q.shape}")
        k = max(1, min(int(k), len(self)))
        if self.uses_faiss():
            return self._search_faiss(q, k)
        sims, idx = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
        step = max(1, min(1024, _SIMS_BUDGET // max(1, len(self))))
        for s in range(0, len(q), step):  # bounded memory: [step, N] similarities at a time
            block = q[s:s + step] @ self.emb.T
            part = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < len(self) else \
                np.tile(np.arange(len(self)), (len(block), 1))
            val = np.take_along_axis(block, part, 1)
            order = np.argsort(-val, axis=1, kind="stable")
            idx[s:s + step] = np.take_along_axis(part, order, 1)
            sims[s:s + step] = np.take_along_axis(val, order, 1)
        return sims, idx

    def _search_faiss(self, q: np.ndarray, k: int):
        faiss = _faiss()
        if self._index is None:
            d = self.emb.shape[1]
            if self.hnsw:
                self._index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
                self._index.hnsw.efSearch = max(64, 2 * k)
            else:
                self._index = faiss.IndexFlatIP(d)
            self._index.add(np.ascontiguousarray(self.emb))
        sims, idx = self._index.search(np.ascontiguousarray(q), k)
        return sims, idx.astype(np.int64)


def _vote(sims, lat, lon, temperature: float, local_km: float):
    """Mode of weighted neighbours: the neighbour with the most weight within ``local_km`` wins,
    the answer is the weighted spherical mean of the neighbours within ``local_km`` of it."""
    w = np.exp((sims - sims.max(axis=1, keepdims=True)) / temperature)  # [B, k]
    out_lat, out_lon = np.empty(len(w)), np.empty(len(w))
    for b in range(len(w)):
        d = haversine_km(lat[b][:, None], lon[b][:, None], lat[b][None, :], lon[b][None, :])
        near = d <= local_km
        support = near @ w[b]
        best = int(np.argmax(support))
        sel = near[best]
        xyz = (latlon_to_xyz(lat[b][sel], lon[b][sel]) * w[b][sel, None]).sum(0)
        out_lat[b], out_lon[b] = xyz_to_latlon(xyz)
    return out_lat, out_lon


def knn_locate(query, gallery: Gallery, k: int = 16, temperature: float = 0.05,
               local_km: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
    """kNN geolocation (degrees): see the module docstring."""
    sims, idx = gallery.search(query, k)
    return _vote(sims, gallery.lat[idx], gallery.lon[idx], temperature, local_km)


@dataclass(eq=False)
class Prototypes:
    """Per-cell prototypes: mean embedding (normalised) and spherical-mean coordinates of clustered places."""

    emb: np.ndarray  # [P, D] float32
    lat: np.ndarray
    lon: np.ndarray
    cell: np.ndarray  # [P] cell index
    count: np.ndarray  # [P] images
    cells_hash: str = ""
    radius_km: float = 0.0

    JSON = "prototypes.json"
    TENSORS = "prototypes.safetensors"

    def save(self, directory) -> None:
        from safetensors.numpy import save_file

        directory = Path(directory)
        save_file({"emb": self.emb.astype(np.float16), "lat": self.lat, "lon": self.lon,
                   "cell": self.cell.astype(np.int64), "count": self.count.astype(np.int64)},
                  str(directory / self.TENSORS))
        (directory / self.JSON).write_text(json.dumps({"format_version": 1, "cells_hash": self.cells_hash,
                                                       "radius_km": self.radius_km, "n": int(len(self.lat))}) + "\n")

    @classmethod
    def load(cls, directory, cells=None) -> "Prototypes":
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / cls.JSON).read_text())
            t = load_file(str(directory / cls.TENSORS))
            protos = cls(t["emb"].astype(np.float32), t["lat"], t["lon"], t["cell"], t["count"],
                         str(meta["cells_hash"]), float(meta["radius_km"]))
        except Exception as exc:
            raise ValueError(f"{directory / cls.JSON}: unreadable prototypes ({exc})") from exc
        if cells is not None and protos.cells_hash != cells.hash():
            raise ValueError(f"{directory / cls.JSON}: built for another cell table")
        return protos


def _leader_clusters(lat: np.ndarray, lon: np.ndarray, radius_km: float) -> np.ndarray:
    """Greedy leader clustering: each place joins the first leader within ``radius_km``, else leads."""
    leaders: list[int] = []
    label = np.empty(lat.size, np.int64)
    for i in range(lat.size):
        if leaders:
            d = haversine_km(lat[i], lon[i], lat[leaders], lon[leaders])
            j = int(np.argmin(d))
            if d[j] <= radius_km:
                label[i] = j
                continue
        leaders.append(i)
        label[i] = len(leaders) - 1
    return label


def build_prototypes(emb, lat, lon, cells, radius_km: float = 25.0, groups=None) -> Prototypes:
    """Prototypes of training images ``emb [N, D]`` at ``lat/lon`` (see the module docstring).

    ``groups`` (e.g. ``location_id``) keeps the views of one place together;
    places are clustered in each cell in a fixed (sorted) order, so the result
    is deterministic.
    """
    x = l2_normalize(emb)
    lat = np.asarray(lat, np.float64).reshape(-1)
    lon = np.asarray(lon, np.float64).reshape(-1)
    cell = cells.assign(lat, lon, nearest=True)
    if groups is None:
        groups = np.arange(lat.size)
    _, place = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    proto_of = np.empty(lat.size, np.int64)
    n_proto = 0
    for c in np.unique(cell):
        rows = np.flatnonzero(cell == c)
        places, first = np.unique(place[rows], return_index=True)
        p_rows = rows[first]
        order = np.lexsort((lon[p_rows], lat[p_rows]))
        label = np.empty(places.size, np.int64)
        label[order] = _leader_clusters(lat[p_rows][order], lon[p_rows][order], radius_km)
        proto_of[rows] = n_proto + label[np.searchsorted(places, place[rows])]
        n_proto += int(label.max()) + 1
    sums = np.zeros((n_proto, x.shape[1]), np.float64)
    np.add.at(sums, proto_of, x)
    xyz = np.zeros((n_proto, 3))
    np.add.at(xyz, proto_of, latlon_to_xyz(lat, lon))
    p_lat, p_lon = xyz_to_latlon(xyz)
    p_cell = np.zeros(n_proto, np.int64)
    p_cell[proto_of] = cell
    return Prototypes(l2_normalize(sums), p_lat, p_lon, p_cell, np.bincount(proto_of, minlength=n_proto),
                      cells.hash(), float(radius_km))


def _refine(probs, q, cand_emb, cand_lat, cand_lon, cand_cell, base_lat, base_lon, top_cells, temperature,
            max_km):
    p = np.asarray(probs, np.float64)
    top = np.argsort(-p, axis=1, kind="stable")[:, :top_cells]
    order = np.argsort(cand_cell, kind="stable")
    starts = np.searchsorted(cand_cell[order], np.arange(p.shape[1] + 1))
    out_lat = np.asarray(base_lat, np.float64).copy()
    out_lon = np.asarray(base_lon, np.float64).copy()
    refined = np.zeros(len(p), bool)
    for b in range(len(p)):
        rows = np.concatenate([order[starts[c]:starts[c + 1]] for c in top[b]])
        if rows.size == 0:
            continue
        score = np.log(np.maximum(p[b, cand_cell[rows]], 1e-12)) + (cand_emb[rows] @ q[b]) / temperature
        j = rows[int(np.argmax(score))]
        if haversine_km(cand_lat[j], cand_lon[j], base_lat[b], base_lon[b]) <= max_km:
            out_lat[b], out_lon[b], refined[b] = cand_lat[j], cand_lon[j], True
    return out_lat, out_lon, refined


def refine(probs, query, protos: Prototypes, base_lat, base_lon, top_cells: int = 5, temperature: float = 0.1,
           max_km: float = 1000.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PIGEON refinement: ``(lat, lon, refined [B] bool)``; ``base_lat/lon`` is the head's estimate."""
    return _refine(probs, l2_normalize(query), protos.emb, protos.lat, protos.lon, protos.cell, base_lat, base_lon,
                   top_cells, temperature, max_km)


def knn_refine(probs, query, gallery: Gallery, cells, base_lat, base_lon, top_cells: int = 5,
               temperature: float = 0.1, max_km: float = 1000.0):
    """The same refinement over single training images (a prototype per image)."""
    cell = cells.assign(gallery.lat, gallery.lon, nearest=True)
    return _refine(probs, l2_normalize(query), gallery.emb, gallery.lat, gallery.lon, cell, base_lat, base_lon,
                   top_cells, temperature, max_km)
