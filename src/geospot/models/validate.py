"""Checks that let a model directory be loaded without trusting it.

A model folder is data from anywhere: its `config.json` may ask for absurd
shapes (allocated before any weight is read), its JSON may be nested 100000
deep, its safetensors may be truncated or hold NaN. Everything here reads only
what it must and raises `ValueError` with the file and the reason; the
checkpoint loader turns those into `CheckpointError`.
"""
from __future__ import annotations

import json
import math
import os
import struct
import time
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 16 << 20   # a config.json is a few kB; metrics can add some
MAX_HEADER_BYTES = 64 << 20   # safetensors' own limit is 100 MB
MAX_JSON_DEPTH = 64           # config.json nests ~5 deep

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def shape_problems(got: dict[str, tuple], want: dict[str, tuple], source: str = "config.json") -> list[str]:
    """What differs between stored tensor shapes ``got`` and the shapes ``source`` implies
    (missing, unexpected, wrong shape), one phrase each; empty when they match."""
    problems = [f"missing tensor '{k}'" for k in want if k not in got]
    problems += [f"unexpected tensor '{k}'" for k in got if k not in want]
    problems += [f"'{k}' has shape {list(got[k])}, {source} implies {list(v)}"
                 for k, v in want.items() if k in got and tuple(got[k]) != tuple(v)]
    return problems


def read_json_bounded(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parse a small JSON file; refuse huge files and deep nesting before the parser recurses."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path}: {size:,} bytes, larger than the {max_bytes:,} a geospot JSON file may have")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    check_json_depth(text, str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None


def check_json_depth(text: str, where: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON whose brackets nest deeper than `limit` (strings are skipped), in linear time."""
    depth, in_str, escaped = 0, False, False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise ValueError(f"{where}: JSON nested more than {limit} levels deep")
        elif ch in "]}":
            depth -= 1


def safetensors_shapes(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} from a safetensors header, checked against the file size,
    without reading (or allocating) any tensor."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: corrupt or truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ValueError(f"{path}: corrupt safetensors header (declares {n:,} header bytes in a "
                                 f"{size:,}-byte file)")
            text = fh.read(n).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: corrupt safetensors header (not UTF-8)") from None
    check_json_depth(text, str(path), limit=4)
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt safetensors header ({exc.msg})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not an object)")
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
            nbytes = math.prod(shape) * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: corrupt safetensors header entry for {name!r}") from None
        if any(s < 0 for s in shape) or not (0 <= start <= end <= data) or end - start != nbytes:
            raise ValueError(f"{path}: corrupt or truncated safetensors file: tensor {name!r} ({dtype} "
                             f"{list(shape)}) does not fit in it")
        out[name] = (dtype, shape)
    return out


def read_numpy_tensors(path: Path, what: str, error: type[Exception] = ValueError) -> dict:
    """The NumPy arrays of a safetensors file, or one ``error`` naming the file and ``what`` it is
    (missing, or damaged: safetensors raises several types for truncated or garbled files)."""
    from safetensors.numpy import load_file

    if not path.is_file():
        raise error(f"{path}: missing ({what})")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise error(f"{path}: corrupt or unreadable safetensors file ({what}): {exc}") from None


def check_finite(tensors: dict, path: Path) -> None:
    """Refuse NaN/inf weights: they would turn every answer into NaN (or a silent constant)."""
    import torch

    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values")


def load_train_places(path: Path):
    """(lat, lon) float arrays of a model's training places, validated."""
    import numpy as np
    from safetensors.numpy import load_file

    shapes = safetensors_shapes(path)
    if set(shapes) != {"lat", "lon"}:
        raise ValueError(f"{path}: expected tensors 'lat' and 'lon', found {sorted(shapes)}")
    try:
        t = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on a damaged file
        raise ValueError(f"{path}: corrupt or unreadable safetensors file ({exc})") from None
    lat, lon = np.asarray(t["lat"], np.float64), np.asarray(t["lon"], np.float64)
    if lat.ndim != 1 or lat.shape != lon.shape:
        raise ValueError(f"{path}: 'lat' and 'lon' must be 1-D and of equal length, got {lat.shape} and {lon.shape}")
    if not (np.isfinite(lat).all() and np.isfinite(lon).all() and (np.abs(lat) <= 90).all()
            and (np.abs(lon) <= 180).all()):
        raise ValueError(f"{path}: coordinates outside [-90, 90] x [-180, 180] or not finite")
    return t["lat"], t["lon"]


def clean_stale_temp_dirs(target: Path, max_age_s: float = 3600.0) -> list[Path]:
    """Remove `.NAME.tmp-*` / `.NAME.old-*` siblings of `target` left by a killed save.

    A folder whose name carries the pid of a live process is another save in
    progress and is kept; one without a pid is removed only when older than `max_age_s`."""
    import shutil

    removed = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for p in parent.glob(f".{target.name}.{kind}-*"):
            if not p.is_dir() or p.is_symlink():
                continue
            pid = _pid_in_name(p.name)
            if pid is not None:
                if _alive(pid):
                    continue
            else:
                try:
                    if time.time() - p.stat().st_mtime < max_age_s:
                        continue
                except OSError:
                    continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _pid_in_name(name: str) -> int | None:
    # ".NAME.tmp-p1234-xxxx": the pid of the writer
    tail = name.rsplit(".", 1)[-1]
    parts = tail.split("-")
    if len(parts) >= 2 and parts[1].startswith("p") and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
