"""The undo log: one CSV row per change, written BEFORE the change lands.

Each row names the file changed (`target`), its sha256 before and after, and
how to get the original bytes back:

- `exif`: the JPEG's original EXIF segment (empty for an inserted one) is
  stored in the backup folder beside the log, with its `offset` and the
  length of the segment geospot wrote (`new_len`): restoring splices it back;
- `sidecar-new`: the sidecar did not exist: restoring deletes it;
- `sidecar-edit`: a full copy of the original sidecar is in the backup folder.

Because the row (and its backup) is flushed to disk before the atomic rename,
a crash leaves either an untouched photo (its sha256 is still `sha256_before`)
or a complete one with a row that can undo it. Undo checks the hashes, so it
is safe to run twice and refuses files changed since by someone else.
"""
from __future__ import annotations

import csv
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from geospot.geotag.atomic import atomic_write

FIELDS = ["time", "action", "photo", "target", "sha256_before", "sha256_after", "offset", "new_len", "backup",
          "mtime_ns", "atime_ns", "lat", "lon", "radius_m", "method"]
ACTIONS = ("exif", "sidecar-new", "sidecar-edit")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str | None:
    try:
        return sha256(Path(path).read_bytes())
    except FileNotFoundError:
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported (e.g. Windows): the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ChangeLog:
    """Append-only CSV log plus a content-addressed backup folder (`LOG.csv.backup/`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.backup_dir = self.path.with_name(self.path.name + ".backup")

    def rows(self) -> list[dict]:
        return read_log(self.path) if self.path.is_file() else []

    def done(self) -> set[tuple[str, str]]:
        """(target, sha256_after) of every logged change: a file in that state was finished before."""
        return {(r["target"], r["sha256_after"]) for r in self.rows()}

    def _backup(self, data: bytes) -> str:
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = sha256(data) + ".bin"
        dest = self.backup_dir / name
        if not (dest.is_file() and sha256_file(dest) == sha256(data)):
            atomic_write(dest, data)
        return name

    def record(self, row: dict, backup: bytes | None = None) -> None:
        """Store the backup, then append the row, both on disk before returning."""
        row = dict(row)
        row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        row["backup"] = self._backup(backup) if backup is not None else ""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.path.parent)


def read_log(path: str | Path) -> list[dict]:
    """Rows of a log; raises ValueError with the row number when it is not a geospot log."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [f for f in ("action", "target", "sha256_before", "sha256_after") if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a geospot geotag log (missing column(s) {', '.join(missing)})")
        rows = []
        for n, row in enumerate(reader, start=2):
            if row["action"] not in ACTIONS:
                raise ValueError(f"{path} row {n}: unknown action {row['action']!r}")
            row["_row"] = n
            rows.append(row)
    return rows


@dataclass
class UndoResult:
    target: str
    status: str  # restored | already-original | failed
    message: str = ""


def _restore_one(row: dict, backup_dir: Path) -> UndoResult:
    target = Path(row["target"])
    current = sha256_file(target)
    if current == row["sha256_before"] or (current is None and row["action"] == "sidecar-new"):
        return UndoResult(str(target), "already-original")
    if current is None:
        return UndoResult(str(target), "failed", "file is missing")
    if current != row["sha256_after"]:
        return UndoResult(str(target), "failed", "file changed since geotag wrote it (sha256 differs); not touched")
    if row["action"] == "sidecar-new":
        target.unlink()
        return UndoResult(str(target), "restored", "sidecar removed")
    backup = backup_dir / row["backup"]
    if not row["backup"] or not backup.is_file():
        return UndoResult(str(target), "failed", f"backup {backup} is missing")
    saved = backup.read_bytes()
    if row["action"] == "exif":
        data = target.read_bytes()
        offset, new_len = int(row["offset"]), int(row["new_len"])
        original = data[:offset] + saved + data[offset + new_len:]
    else:
        original = saved
    if sha256(original) != row["sha256_before"]:
        return UndoResult(str(target), "failed", "restored bytes would not match the original sha256; not touched")
    times = (int(row["atime_ns"]), int(row["mtime_ns"])) if row.get("mtime_ns") else None
    atomic_write(target, original, times_ns=times)
    return UndoResult(str(target), "restored")


def undo(log_path: str | Path) -> list[UndoResult]:
    """Undo every change in a log, newest first (so repeated edits of one file unwind in order)."""
    log = ChangeLog(log_path)
    out = []
    for row in reversed(read_log(log.path)):
        try:
            out.append(_restore_one(row, log.backup_dir))
        except (OSError, ValueError) as exc:
            out.append(UndoResult(row["target"], "failed", f"log row {row['_row']}: {exc}"))
    return out
