"""Sharded datasets: WebDataset/img2dataset tar shards and zips of JPEGs, used in place.

A *shard spec* names archives by path, glob or brace pattern
(`shards/{00000..00099}.tar`, `images/train/*.zip`), or a `*.shards.json`
descriptor that also says which metadata keys hold the coordinates:

    {"shards": "shards/{00000..00099}.tar", "lat": "gps.latitude", "lon": "gps.longitude",
     "location_id": "place", "metadata": "train.csv", "key_column": "id"}

(paths relative to the descriptor's folder). Every image member becomes one
manifest row whose `path` is virtual, `ARCHIVE#MEMBER` (see `archives`), so the
result is an ordinary `Manifest` and goes wherever one goes; `open_image`
reads such paths from the archive without extracting anything.

Coordinates come, for each image, from the first of: a metadata table (a
`.csv`/`.parquet` inside the archive, the archive's twin beside it
(`00000.parquet` next to `00000.tar`, as img2dataset writes) or the
descriptor's `metadata`), matched on member name, file name or key; else the
WebDataset sidecar `KEY.json` (img2dataset writes one per image); else a
`KEY.txt` holding just "lat lon". Keys are found under common names (`lat`,
`latitude`, `lon`, `lng`, `longitude`, ...) unless named explicitly (dotted
paths reach nested fields). Validation is the manifest's own: one problem per
bad row naming `ARCHIVE#MEMBER` and the reason.
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from geospot.data.archives import (ARCHIVE_SUFFIXES, ArchiveError, list_members, read_member,
                                   virtual_path)
from geospot.data.manifest import Manifest, ManifestError, Problem, _validate

__all__ = ["DESCRIPTOR_SUFFIX", "ShardSpec", "expand_pattern", "is_shard_spec", "read_shards"]

DESCRIPTOR_SUFFIX = ".shards.json"
IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "heic", "heif", "avif", "tif", "tiff", "bmp", "gif"})
LAT_KEYS = ("lat", "latitude", "gps_latitude", "gps_lat", "lat_deg", "y")
LON_KEYS = ("lon", "lng", "long", "longitude", "gps_longitude", "gps_lon", "lon_deg", "x")
TABLE_KEY_COLUMNS = ("path", "key", "id", "image_id", "filename", "file", "image", "img", "name")
_RESERVED = frozenset({"path", "lat", "lon", "location_id", "key", "shard"})
_MAX_EXTRA_CHARS = 1000  # longer metadata fields (img2dataset's EXIF dump) are not kept as columns
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


@dataclass(frozen=True)
class ShardSpec:
    """Where the shards are and how their metadata is named (None = look for common names)."""

    shards: tuple[str, ...]
    lat: str | None = None
    lon: str | None = None
    location_id: str | None = None
    metadata: str | None = None
    key_column: str | None = None
    label: str = "shards"

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShardSpec:
        """Read a `*.shards.json` descriptor; relative paths resolve against its folder."""
        base = Path(os.path.abspath(path)).parent
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ManifestError([Problem(None, None, f"cannot read shard descriptor: {exc}")], str(path)) from None
        known = {"shards", "lat", "lon", "location_id", "metadata", "key_column"}
        if not isinstance(d, dict) or "shards" not in d or set(d) - known:
            raise ManifestError([Problem(None, None, f"a shard descriptor is a JSON object with 'shards' and "
                                                     f"optionally {sorted(known - {'shards'})}; got {d!r:.200}")],
                                str(path))
        shards = d["shards"] if isinstance(d["shards"], list) else [d["shards"]]
        meta = d.get("metadata")
        return cls(tuple(str(base / s) for s in shards), d.get("lat"), d.get("lon"), d.get("location_id"),
                   str(base / meta) if meta else None, d.get("key_column"), label=str(path))


def _brace_expand(pattern: str) -> list[str]:
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    r = _RANGE.match(body)
    if r:
        a, b = int(r.group(1)), int(r.group(2))
        width = len(r.group(1)) if r.group(1).startswith("0") else 0
        step = 1 if b >= a else -1
        items = [f"{i:0{width}d}" for i in range(a, b + step, step)]
    else:
        items = body.split(",")
    return [x for item in items for x in _brace_expand(head + item + tail)]


def expand_pattern(patterns: str | Sequence[str], base: str | os.PathLike | None = None) -> list[str]:
    """Absolute archive paths for brace (`{000..099}`, `{a,b}`) and glob patterns, in order, deduplicated.

    A name without glob characters is kept even if it does not exist (reported when read).
    """
    base = os.fspath(base) if base is not None else os.getcwd()
    out: dict[str, None] = {}
    for pattern in [patterns] if isinstance(patterns, (str, os.PathLike)) else patterns:
        for p in _brace_expand(os.path.expanduser(os.fspath(pattern))):
            p = os.path.join(base, p)
            hits = sorted(glob.glob(p, recursive=True)) if glob.has_magic(p) else [p]
            for h in hits:
                out.setdefault(os.path.abspath(h), None)
    return list(out)


def is_shard_spec(path: str | os.PathLike) -> bool:
    """True for a `.shards.json` descriptor, a .tar/.zip archive, or a pattern naming archives."""
    text = os.fspath(path)
    low = text.lower()
    if low.endswith(DESCRIPTOR_SUFFIX):
        return True
    if "#" in text:
        return False
    stripped = re.sub(r"\{[^{}]*\}", "", low)
    return low.endswith(ARCHIVE_SUFFIXES) or stripped.endswith((".tar.gz", ".tgz")) or (
        bool(_BRACE.search(low)) and any(e.lower().endswith(ARCHIVE_SUFFIXES) for e in _brace_expand(text)[:1]))


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the member path up to the first dot of its file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _lookup(record: dict, key: str | None, names: Sequence[str]):
    """A field by dotted path (`gps.latitude`), or the first of `names` present (case-insensitive)."""
    if key is not None:
        value = record
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value
    lower = {str(k).lower(): k for k in record}
    for n in names:
        if n in lower:
            return record[lower[n]]
    return None


def _read_table_bytes(data: bytes, name: str, key_column: str | None) -> dict[str, dict]:
    import io

    frame = (pd.read_parquet(io.BytesIO(data)) if name.lower().endswith((".parquet", ".pq"))
             else pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False))
    return _index_table(frame, name, key_column)


def _index_table(frame: pd.DataFrame, name: str, key_column: str | None) -> dict[str, dict]:
    """Rows of a metadata table keyed by their image name, file name and stem."""
    cols = {str(c).lower(): c for c in frame.columns}
    col = key_column if key_column is not None else next((cols[c] for c in TABLE_KEY_COLUMNS if c in cols), None)
    if col is None or col not in frame.columns:
        raise ValueError(f"{name}: no column naming the images (looked for {key_column or ', '.join(TABLE_KEY_COLUMNS)})")
    out: dict[str, dict] = {}
    for rec in frame.to_dict("records"):
        value = str(rec[col]).strip()
        base = value.rsplit("/", 1)[-1]
        for k in (value, base, base.split(".", 1)[0]):
            out.setdefault(k, rec)
    return out


def _table_beside(archive: str, key_column: str | None) -> dict[str, dict] | None:
    stem = archive[: -len(Path(archive).suffix)]
    for ext in (".parquet", ".csv"):
        if os.path.isfile(stem + ext):
            return _read_table_bytes(Path(stem + ext).read_bytes(), stem + ext, key_column)
    return None


def _txt_coords(data: bytes) -> dict | None:
    parts = re.split(r"[,\s]+", data.decode("utf-8", "replace").strip())
    try:
        lat, lon = (float(x) for x in parts)
    except ValueError:  # a caption (img2dataset's .txt), not coordinates
        return None
    return {"lat": lat, "lon": lon}


class _Rows:
    """Column lists for the manifest frame (cheaper than a dict per row at millions of rows)."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {c: [] for c in ("path", "lat", "lon", "location_id", "key", "shard")}
        self.n = 0

    def add(self, values: dict) -> None:
        for c, v in values.items():
            col = self.cols.get(c)
            if col is None:
                col = self.cols[c] = [None] * self.n
            col.append(v)
        self.n += 1
        for col in self.cols.values():
            if len(col) < self.n:
                col.append(None)


def _record_row(record: dict, spec: ShardSpec) -> dict:
    lat = _lookup(record, spec.lat, LAT_KEYS)
    lon = _lookup(record, spec.lon, LON_KEYS)
    loc = _lookup(record, spec.location_id, ("location_id",))
    row = {"lat": "" if lat is None else str(lat), "lon": "" if lon is None else str(lon),
           "location_id": "" if loc is None else str(loc)}
    used = {spec.lat, spec.lon, spec.location_id}
    for k, v in record.items():
        k = str(k)
        if k in used or k.lower() in _RESERVED or k.lower() in LAT_KEYS + LON_KEYS:
            continue
        if isinstance(v, (str, int, float, bool)) and not (isinstance(v, str) and len(v) > _MAX_EXTRA_CHARS):
            row[k] = v
    return row


def _read_archive(archive: str, spec: ShardSpec, shared_table: dict | None, rows: _Rows,
                  problems: list[tuple[str | None, str]], check_files: bool) -> None:
    """Append one row per image of `archive`; problems as (virtual path or archive, message)."""
    try:
        members, damage = list_members(archive)
    except ArchiveError as exc:
        problems.append((archive, str(exc).replace(f"{archive}: ", "")))
        return
    if damage:
        problems.append((archive, damage))
    table = None
    try:
        for m in members:
            if m.name.lower().endswith((".csv", ".parquet")) and not _is_junk(m.name):
                table = _read_table_bytes(read_member(archive, m.name), f"{archive}#{m.name}", spec.key_column)
                break
        table = table or _table_beside(archive, spec.key_column) or shared_table
    except (ValueError, OSError) as exc:
        problems.append((archive, f"unusable metadata table: {exc}"))
    samples: dict[str, dict[str, object]] = {}
    for m in members:
        if _is_junk(m.name):
            continue
        key, ext = _split_key(m.name)
        samples.setdefault(key, {})[ext] = m
    for key, fields in samples.items():
        image_ext = next((e for e in fields if e in IMAGE_EXTS), None)
        if image_ext is None:
            if any(e in ("json", "txt") for e in fields):
                problems.append((virtual_path(archive, key), "metadata without an image "
                                 f"(files {', '.join(key + '.' + e for e in fields)})"))
            continue
        image = fields[image_ext]
        vpath = virtual_path(archive, image.name)
        record = None
        if table is not None:
            base = image.name.rsplit("/", 1)[-1]
            record = next((table[k] for k in (image.name, base, key, base.split(".", 1)[0]) if k in table), None)
        try:
            if record is None and "json" in fields:
                record = json.loads(read_member(archive, fields["json"].name))
                if not isinstance(record, dict):
                    raise ValueError(f"{key}.json is not a JSON object")
            if record is None and "txt" in fields:
                record = _txt_coords(read_member(archive, fields["txt"].name))
        except (ValueError, ArchiveError) as exc:
            problems.append((vpath, f"unreadable metadata: {exc}"))
            continue
        if record is None:
            problems.append((vpath, "no metadata with coordinates (no table row, no .json, no 'lat lon' .txt)"))
            continue
        if check_files and image.size == 0:
            problems.append((vpath, "empty file (0 bytes)"))
            continue
        rows.add({"path": vpath, **_record_row(record, spec), "key": key, "shard": archive})


def _is_junk(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith(".")  # macOS resource forks, hidden files


def read_shards(spec: str | os.PathLike | ShardSpec, check_files: bool = True, on_error: str = "raise") -> Manifest:
    """A `Manifest` of every image in the shards of `spec` (a pattern, an archive or a descriptor).

    Rows keep the archives' order (shard by shard, members in stored order);
    extra columns: `key` (the sample key) and `shard` (the archive), plus the
    scalar metadata fields. Problems (missing archives, damaged ones, images
    without coordinates, bad coordinates, duplicates) are collected as in
    `read_manifest`: `on_error="raise"` raises one `ManifestError` listing them
    all, `"drop"` keeps the good rows and the problems in `manifest.problems`.
    """
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    if not isinstance(spec, ShardSpec):
        text = os.fspath(spec)
        spec = ShardSpec.load(text) if text.lower().endswith(DESCRIPTOR_SUFFIX) else ShardSpec((text,), label=text)
    label = spec.label
    archives = expand_pattern(spec.shards)
    problems: list[Problem] = []
    if not archives:
        raise ManifestError([Problem(None, None, "no archive matches this pattern")], label)
    shared = None
    if spec.metadata:
        try:
            shared = _read_table_bytes(Path(spec.metadata).read_bytes(), spec.metadata, spec.key_column)
        except (OSError, ValueError) as exc:
            raise ManifestError([Problem(None, None, f"metadata table {spec.metadata}: {exc}")], label) from None
    rows, raw = _Rows(), []
    for archive in archives:
        _read_archive(archive, spec, shared, rows, raw, check_files)
    problems += [Problem(None, None, f"{where}: {msg}", label) for where, msg in raw]
    if rows.n == 0:
        raise ManifestError(problems or [Problem(None, None, "the archives hold no images")], label)
    df = pd.DataFrame(rows.cols)
    lines = list(range(2, rows.n + 2))  # "row" = 1-based image number + 1, as for records
    root = Path(os.path.commonpath([os.path.dirname(a) for a in archives]))
    out, row_problems, ok = _validate(df, lines, root, False, label)
    paths = df["path"].tolist()
    # Name the archive member rather than a row number nobody can look up.
    problems += [replace(p, row=None, message=f"{paths[p.row - 2]}: {p.message}") if p.row is not None else p
                 for p in row_problems]
    if problems and on_error == "raise":
        raise ManifestError(problems, label)
    keep = np.flatnonzero(ok)
    source = Path(os.path.abspath(label)) if label.lower().endswith(DESCRIPTOR_SUFFIX) else Path(label)
    return Manifest(out.iloc[keep], source, root, np.asarray(lines, dtype=np.int64)[keep], problems)
