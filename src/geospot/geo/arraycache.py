"""Derived NumPy arrays cached on disk: built once, written atomically, checked on every load.

The reverse-geocoding tables (GeoNames places, outline index) are derived
from files that ship with packages; parsing them costs far more than
reading the result back. :func:`cached_arrays` keeps the result as one
uncompressed ``.npz`` in ``$GEOSPOT_CACHE/geo/``, named by what it was built
from (a changed source file gets a new name), with a header recording the
source and each array's dtype and shape. The zip format's CRC-32 of every
array, which ``zipfile`` verifies as it reads, catches damaged bytes. A file
that fails any check (truncated, flipped bits, another format) is rebuilt
and replaced; a cache folder that cannot be written only means the arrays
are rebuilt in each process.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np

_META = "__meta__"
_LOCK = threading.Lock()


class CacheError(ValueError):
    """A cached file that must not be used (and is rebuilt)."""


def cache_folder() -> Path:
    from geospot.encoders.preprocess import cache_root

    return cache_root() / "geo"


def read(path: Path, source: str) -> dict[str, np.ndarray]:
    """The arrays of a cache file, after checking its header and every array's CRC-32 (else :class:`CacheError`)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z[_META].tobytes().decode("utf-8"))
            if meta.get("source") != source:
                raise CacheError(f"{path}: built from {meta.get('source')!r}, expected {source!r}")
            spec = meta["arrays"]
            if sorted(spec) != sorted(n for n in z.files if n != _META):
                raise CacheError(f"{path}: arrays {sorted(z.files)} do not match the header")
            arrays = {name: z[name] for name in spec}
    except CacheError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:  # zip (CRC-32 included), npy and JSON errors alike: the file is not what we wrote
        raise CacheError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    for name, (dtype, shape) in spec.items():
        a = arrays[name]
        if a.dtype.str != dtype or list(a.shape) != shape:
            raise CacheError(f"{path}: array {name!r} is damaged (dtype or shape differ from the header)")
    return arrays


def write(path: Path, arrays: dict[str, np.ndarray], source: str) -> None:
    """Write atomically (a temporary file renamed over ``path``): readers see the old file or the new one."""
    spec = {name: [a.dtype.str, list(a.shape)] for name, a in arrays.items()}
    header = np.frombuffer(json.dumps({"source": source, "arrays": spec}).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_META: header}, **arrays)
        os.chmod(tmp, 0o644)  # like any other cache file (mkstemp makes it private)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_arrays(name: str, source: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``build()``'s arrays, from ``$GEOSPOT_CACHE/geo/<name>-<hash of source>.npz`` when it holds them.

    ``source`` identifies the inputs and format (e.g. path, size, mtime and a
    version number); another source means another file.
    """
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    try:
        path = cache_folder() / f"{name}-{digest}.npz"
    except OSError:  # GEOSPOT_CACHE is not a folder: work without a cache
        return build()
    with _LOCK:
        try:
            return read(path, source)
        except (FileNotFoundError, CacheError):
            pass  # first use, or a damaged file: build it again
        arrays = build()
        try:
            write(path, arrays, source)
        except OSError:
            return arrays  # read-only or full disk: this process still has the arrays
        for stale in path.parent.glob(f"{name}-*.npz"):  # built from an older source or format
            if stale != path:
                try:
                    stale.unlink()
                except OSError:
                    pass
        return arrays
