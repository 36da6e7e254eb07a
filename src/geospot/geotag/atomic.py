"""Atomic file replacement: a reader (or a crash) sees the old file or the new one, never half."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TMP_SUFFIX = ".geospot-tmp"


def atomic_write(path: str | Path, data: bytes, times_ns: tuple[int, int] | None = None) -> None:
    """Write `data` to a temporary file in the same folder, fsync, then rename over `path`.

    An existing file's permission bits, flags and extended attributes are
    copied to the new one (`shutil.copystat`). `times_ns` = (atime, mtime) to
    set on the result (e.g. the original's, so photo managers sorting by file
    date see no change); None leaves the new file's times as "now"."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            shutil.copystat(path, tmp)
        if times_ns is not None:
            os.utime(tmp, ns=times_ns)
        else:
            os.utime(tmp, None)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
