"""Embeddings of a whole dataset on disk, memory-mapped: memory does not grow with the dataset.

A store is a folder:

- `embeddings.npy` — ``[N, D]`` float16 (default; float32 on request), a NumPy
  `.npy` file opened with `np.load(mmap_mode="r")`: rows are paged in when read,
  so 5M x 1280 float16 (12.8 GB) trains on a machine with less memory than that;
- `ok.npy` — ``[N]`` bool, False where the image could not be embedded;
- `index.parquet` — one row per embedding: `path`, `lat`, `lon`, `location_id`,
  and `split`/`shard`/`collection` when the manifest had them (`collection`: calibration
  holds out one collection at a time);
- `errors.json` — `{row: "path: reason"}` of the failed rows;
- `store.json` — encoder, weights id, preprocessing, mask, N, D, dtype; written
  last, so a folder without it is an unfinished store.

Rows are written in slices (`write(start, emb, ok)`), shard by shard, so
building a store holds one shard of embeddings in memory at a time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["EmbeddingStore", "StoreError", "is_store"]

META = "store.json"
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class StoreError(ValueError):
    """A store folder that is missing, unfinished or inconsistent."""


def is_store(path: str | os.PathLike) -> bool:
    return (Path(path) / META).is_file()


class EmbeddingStore:
    """Memory-mapped embeddings plus the rows they belong to (see the module docstring)."""

    def __init__(self, root: Path, meta: dict, emb: np.ndarray, ok: np.ndarray, index: pd.DataFrame) -> None:
        self.root, self.meta, self.emb, self.ok, self.index = root, meta, emb, ok, index

    def __len__(self) -> int:
        return int(self.emb.shape[0])

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    @property
    def lat(self) -> np.ndarray:
        return self.index["lat"].to_numpy(np.float64)

    @property
    def lon(self) -> np.ndarray:
        return self.index["lon"].to_numpy(np.float64)

    @property
    def groups(self) -> np.ndarray:
        return self.index["location_id"].astype(str).to_numpy(dtype=object)

    @classmethod
    def create(cls, root: str | os.PathLike, manifest, dim: int, meta: dict, dtype: str = "float16") -> EmbeddingStore:
        """A new, writable store for the rows of `manifest` (zero rows, ok False until written)."""
        if dtype not in ("float16", "float32"):
            raise ValueError(f"store dtype must be float16 or float32, got {dtype!r}")
        out = Path(root)
        out.mkdir(parents=True, exist_ok=True)
        (out / META).unlink(missing_ok=True)  # unfinished until `finish`
        n = len(manifest)
        emb = np.lib.format.open_memmap(out / "embeddings.npy", mode="w+", dtype=dtype, shape=(n, int(dim)))
        ok = np.lib.format.open_memmap(out / "ok.npy", mode="w+", dtype=bool, shape=(n,))
        cols = [c for c in ("path", "lat", "lon", "location_id", "split", "shard", "collection")
                if c in manifest.df.columns]
        index = manifest.df[cols].reset_index(drop=True)
        index.to_parquet(out / "index.parquet", index=False)
        meta = dict(meta, n=n, dim=int(dim), dtype=dtype)
        return cls(out, meta, emb, ok, index)

    def write(self, start: int, emb: np.ndarray, ok: np.ndarray) -> None:
        """Rows `start:start+len(emb)`; refuses values float16 cannot hold (they would become inf)."""
        emb = np.asarray(emb)
        if self.emb.dtype == np.float16 and emb.size and float(np.abs(emb).max()) > _FLOAT16_MAX:
            raise StoreError(f"{self.root}: embeddings exceed float16's range; build the store with dtype float32")
        self.emb[start:start + len(emb)] = emb
        self.ok[start:start + len(ok)] = ok

    def finish(self, errors: dict[int, str]) -> None:
        """Flush and mark complete (store.json last)."""
        self.emb.flush()
        self.ok.flush()
        (self.root / "errors.json").write_text(json.dumps({str(k): v for k, v in sorted(errors.items())}, indent=0),
                                               encoding="utf-8")
        tmp = self.root / f"{META}.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, self.root / META)

    @classmethod
    def open(cls, root: str | os.PathLike) -> EmbeddingStore:
        """A finished store, embeddings memory-mapped read-only."""
        root = Path(root)
        if not (root / META).is_file():
            raise StoreError(f"{root}: not a finished embedding store (no {META}; rerun `geospot embed ... --store`)")
        meta = json.loads((root / META).read_text(encoding="utf-8"))
        emb = np.load(root / "embeddings.npy", mmap_mode="r")
        ok = np.load(root / "ok.npy", mmap_mode="r")
        index = pd.read_parquet(root / "index.parquet")
        if emb.shape != (meta["n"], meta["dim"]) or ok.shape != (meta["n"],) or len(index) != meta["n"]:
            raise StoreError(f"{root}: arrays {emb.shape}/{ok.shape}/{len(index)} rows disagree with {META}")
        return cls(root, meta, emb, ok, index)

    def errors(self) -> dict[int, str]:
        f = self.root / "errors.json"
        return {int(k): v for k, v in json.loads(f.read_text(encoding="utf-8")).items()} if f.is_file() else {}
