"""Embed a dataset shard by shard, on one process or on every rank of a `torchrun` job.

Built on `embed_paths` and its on-disk cache, not beside them:

- the dataset is cut into shards: one per archive for tar/zip datasets (the
  manifest's `shard` column), else runs of `rows_per_shard` rows;
- rank r of W embeds shards r, r + W, r + 2W, ... with one `embed_paths` call
  per shard, writing the shared cache (each call caches its own results, so a
  crashed rank loses at most the shard it was on, and a rerun, on any number
  of ranks, recomputes only what is not cached);
- after a barrier, rank 0 walks the shards in order, reads each back from the
  cache (an `embed_paths` call that finds everything cached, and fills any
  gap) and writes the memory-mapped store and/or the Parquet export, one shard
  in memory at a time.

The merged result is the single-process result: same shards, same calls.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geospot.encoders.embed import embed_paths

__all__ = ["ShardedEmbedding", "embed_sharded", "shard_rows"]


def shard_rows(manifest, rows_per_shard: int = 10_000) -> list[np.ndarray]:
    """Row indices of each shard, in order: one per archive (`shard` column), else fixed-size runs."""
    n = len(manifest)
    if "shard" in manifest.df.columns:
        _, inverse = np.unique(manifest.df["shard"].astype(str).to_numpy(), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
        return sorted(groups, key=lambda g: int(g[0]))  # archives in manifest order
    return [np.arange(a, min(n, a + rows_per_shard)) for a in range(0, n, rows_per_shard)]


@dataclass
class ShardedEmbedding:
    """What a (rank-0) merge produced: counts, the per-row errors, where things were written."""

    n: int = 0
    n_ok: int = 0
    dim: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    shards_done_here: int = 0
    store: Path | None = None
    export: Path | None = None


def embed_sharded(
    manifest,
    runtime,
    preprocess,
    *,
    cache_dir: str | os.PathLike,
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
    mask=None,
    batch_size: int = 32,
    workers: int | None = None,
    rows_per_shard: int = 10_000,
    store: str | os.PathLike | None = None,
    store_dtype: str = "float16",
    export: str | os.PathLike | None = None,
    store_meta: dict | None = None,
    progress: bool = True,
) -> ShardedEmbedding:
    """Embed this rank's shards into the cache; on rank 0, merge into `store` and/or `export`.

    `barrier`: a callable all ranks reach before the merge (`geospot.train.dist.barrier`).
    Returns counts on rank 0 (after the merge) and `shards_done_here` on every rank.
    """
    groups = shard_rows(manifest, rows_per_shard)
    paths = np.asarray(manifest.paths, dtype=object)
    kw: dict[str, Any] = dict(cache_dir=cache_dir, batch_size=batch_size, workers=workers, mask=mask)
    mine = list(range(rank, len(groups), world_size))
    for j, s in enumerate(mine):
        if progress:
            print(f"geospot: rank {rank}/{world_size}: shard {s + 1}/{len(groups)} ({j + 1} of my {len(mine)}), "
                  f"{len(groups[s])} images", file=sys.stderr, flush=True)
        embed_paths(list(paths[groups[s]]), runtime, preprocess, progress=False, **kw)
    if barrier is not None:
        barrier()
    result = ShardedEmbedding(n=len(manifest), dim=int(runtime.embed_dim), shards_done_here=len(mine))
    if rank != 0:
        return result
    return _merge(manifest, groups, paths, runtime, preprocess, kw, result, store, store_dtype, export,
                  store_meta or {}, progress)


def _merge(manifest, groups, paths, runtime, preprocess, kw, result, store, store_dtype, export, store_meta,
           progress) -> ShardedEmbedding:
    from tqdm import tqdm

    from geospot.encoders.store import EmbeddingStore

    st = EmbeddingStore.create(store, manifest, result.dim, store_meta, store_dtype) if store else None
    writer = _ParquetExport(export, result.dim) if export else None
    bar = tqdm(total=len(manifest), desc="merge", unit="img", file=sys.stderr, disable=not progress)
    try:
        for idx in groups:
            res = embed_paths(list(paths[idx]), runtime, preprocess, progress=False, **kw)  # cached: a read
            result.n_ok += int(res.ok.sum())
            result.errors.update({int(idx[i]): msg for i, msg in res.errors.items()})
            if st is not None:
                contiguous = idx[-1] - idx[0] + 1 == len(idx) and bool(np.all(np.diff(idx) == 1))
                if contiguous:
                    st.write(int(idx[0]), res.embeddings, res.ok)
                else:
                    for i, row in enumerate(idx):
                        st.write(int(row), res.embeddings[i:i + 1], res.ok[i:i + 1])
            if writer is not None:
                df = manifest.df.iloc[idx]
                writer.write(df["path"].tolist(), df["lat"].to_numpy(), df["lon"].to_numpy(), res.embeddings, res.ok)
            bar.update(len(idx))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if st is not None:
        st.finish(result.errors)
        result.store = st.root
    result.export = Path(export) if export else None
    return result


class _ParquetExport:
    """`path, lat, lon, ok, embedding` (a list<float32> column), written one row group per shard."""

    def __init__(self, path: str | os.PathLike, dim: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.dim = pa, dim
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.schema = pa.schema([("path", pa.string()), ("lat", pa.float64()), ("lon", pa.float64()),
                                 ("ok", pa.bool_()), ("embedding", pa.list_(pa.float32()))])
        self.writer = pq.ParquetWriter(self.tmp, self.schema)

    def write(self, paths, lat, lon, emb: np.ndarray, ok: np.ndarray) -> None:
        pa = self.pa
        flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1))
        offsets = pa.array(np.arange(0, (len(emb) + 1) * self.dim, self.dim, dtype=np.int32))
        # a failed image has no embedding: null, not a row of zeros someone might use
        values = pa.ListArray.from_arrays(offsets, flat, mask=pa.array(~np.asarray(ok, bool)))
        table = pa.Table.from_arrays([pa.array(paths, pa.string()), pa.array(lat, pa.float64()),
                                      pa.array(lon, pa.float64()), pa.array(ok, pa.bool_()), values],
                                     schema=self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)
