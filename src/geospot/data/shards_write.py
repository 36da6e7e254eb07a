"""Write a manifest as img2dataset-style tar shards (`geospot data shards`).

Each shard `NNNNN.tar` holds, per image, `KEY.EXT` (the original bytes, never
re-encoded) and `KEY.json` (`key`, `lat`, `lon`, `location_id`, `status`, the
manifest's other columns and the original path), beside `NNNNN.parquet` with
the same metadata, as img2dataset writes. Keys are the shard number followed by
the image's index in the shard (`000120034`). A `dataset.shards.json`
descriptor names them all, so `geospot train OUT/dataset.shards.json` works.
Tars are deterministic (fixed owner and times) and written atomically.
"""
from __future__ import annotations

import io
import json
import math
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geospot.data.manifest import Manifest

__all__ = ["ShardWriteResult", "write_shards"]

_EXT_ALIASES = {"jpeg": "jpg", "tif": "tiff"}


@dataclass
class ShardWriteResult:
    shards: list[Path] = field(default_factory=list)
    written: int = 0
    errors: list[str] = field(default_factory=list)  # "path: reason" per image left out
    descriptor: Path | None = None


def _json_value(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_shards(manifest: Manifest, out_dir: str | os.PathLike, per_shard: int = 10_000) -> ShardWriteResult:
    """Write `manifest`'s images into tar shards of up to `per_shard` images under `out_dir`."""
    from geospot.data.archives import ArchiveError, read_member, split_virtual

    if per_shard < 1:
        raise ValueError(f"per_shard must be >= 1, got {per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(manifest)
    n_shards = max(1, math.ceil(n / per_shard))
    shard_digits = max(5, len(str(n_shards - 1)))
    key_digits = max(1, len(str(per_shard - 1)))
    df = manifest.df
    extra = [c for c in df.columns if c not in ("path", "lat", "lon", "location_id", "key", "shard")]
    result = ShardWriteResult()
    for s in range(n_shards):
        name = f"{s:0{shard_digits}d}"
        tmp, final = out / f"{name}.tar.tmp-{os.getpid()}", out / f"{name}.tar"
        records = []
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for j, i in enumerate(range(s * per_shard, min(n, (s + 1) * per_shard))):
                row = df.iloc[i]
                path = str(row["path"])
                try:
                    data = read_member(path) if split_virtual(path) else Path(path).read_bytes()
                except (OSError, ArchiveError) as exc:
                    result.errors.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
                    continue
                if not data:
                    result.errors.append(f"{path}: empty file (0 bytes)")
                    continue
                key = f"{name}{j:0{key_digits}d}"
                ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else "jpg"
                ext = _EXT_ALIASES.get(ext, ext)
                meta = {"key": key, "lat": float(row["lat"]), "lon": float(row["lon"]),
                        "location_id": _portable_id(str(row["location_id"]), path, manifest.root),
                        "status": "success", "source_path": _portable_id(path, path, manifest.root)}
                meta.update({c: _json_value(row[c]) for c in extra})
                _add(tar, f"{key}.{ext}", data)
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                records.append(meta)
                result.written += 1
        os.replace(tmp, final)
        pd.DataFrame(records).to_parquet(out / f"{name}.parquet", index=False)
        result.shards.append(final)
    last = f"{n_shards - 1:0{shard_digits}d}"
    pattern = f"{{{0:0{shard_digits}d}..{last}}}.tar" if n_shards > 1 else f"{last}.tar"
    result.descriptor = out / "dataset.shards.json"
    result.descriptor.write_text(json.dumps({"shards": pattern, "location_id": "location_id"}, indent=1) + "\n",
                                 encoding="utf-8")
    return result


def _portable_id(value: str, path: str, root: Path) -> str:
    """Ids that are the image's absolute path become relative to the manifest's folder."""
    if value != path:
        return value
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return value
