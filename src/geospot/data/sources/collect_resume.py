"""Resuming a collection: what an output folder already holds (`load_state`), the repair of a
manifest cut short by a kill, and the settings that must match (`check_settings`)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from geospot.data.sources.collect_types import JOURNAL, MANIFEST, SETTINGS, CollectError

log = logging.getLogger("geospot.data.collect")


@dataclass
class ResumeState:
    """What an output folder already holds."""

    seen: set[str] = field(default_factory=set)  # source ids in the manifest
    cell_done: dict[str, int] = field(default_factory=dict)  # locations per cell
    attempted: dict[str, set[int]] = field(default_factory=dict)  # point indices tried
    rows: int = 0
    repaired: list[str] = field(default_factory=list)


def _repair_manifest(path: Path, views_per_location: int) -> list[str]:
    """Cut a torn last line and an incomplete last location (a kill mid-write)."""
    import csv

    notes: list[str] = []
    with open(path, "rb") as f:
        data_end = f.seek(0, os.SEEK_END)
        if data_end == 0:
            return notes
        f.seek(max(0, data_end - 1))
        if f.read(1) != b"\n":  # find the last newline, reading backwards in blocks
            pos, keep = data_end, 0
            while pos > 0:
                start = max(0, pos - 65536)
                f.seek(start)
                found = f.read(pos - start).rfind(b"\n")
                if found >= 0:
                    keep = start + found + 1
                    break
                pos = start
            notes.append(f"{path.name}: removed a torn last line ({data_end - keep} bytes)")
            data_end = keep
        # Walk the lines tracking where the last location's rows begin.
        f.seek(0)
        header = f.readline()
        names = next(csv.reader([header.decode("utf-8", "replace")]), [])
        if not header.endswith(b"\n") or "source_id" not in names or "cell" not in names:
            # Checked before anything is cut: never "repair" someone else's file.
            raise CollectError(f"{path}: not a collector manifest (header {header[:80]!r}); "
                               "use a new --out folder")
        id_col = names.index("source_id")
        last_id, last_start, last_count, offset = None, f.tell(), 0, f.tell()
        while offset < data_end:
            line = f.readline()
            if not line:
                break
            fields = next(csv.reader([line.decode("utf-8")]))
            sid = fields[id_col] if len(fields) > id_col else None
            if sid != last_id:
                last_id, last_start, last_count = sid, offset, 0
            last_count += 1
            offset += len(line)
    cut = data_end
    if last_id is not None and last_count < views_per_location:
        notes.append(f"{path.name}: removed {last_count} row(s) of incomplete location {last_id}")
        cut = last_start
    if cut < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(cut)
    return notes


def load_state(out_dir: Path, views_per_location: int) -> ResumeState:
    """Rebuild the seen ids, per-cell counts and tried points of ``out_dir``."""
    import csv

    state = ResumeState()
    manifest = out_dir / MANIFEST
    if manifest.exists():
        state.repaired = _repair_manifest(manifest, views_per_location)
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("source_id", "cell") if c not in (reader.fieldnames or [])]
            if missing:
                raise CollectError(f"{manifest}: missing column(s) {missing}; is this a collector output folder?")
            previous = None
            for row in reader:
                state.rows += 1
                sid = row["source_id"]
                if sid != previous:  # rows of one location are contiguous
                    state.seen.add(sid)
                    state.cell_done[row["cell"]] = state.cell_done.get(row["cell"], 0) + 1
                    previous = sid
    journal = out_dir / JOURNAL
    if journal.exists():
        with open(journal, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                try:
                    entry = json.loads(line)
                    cell, index, outcome = str(entry["cell"]), int(entry["i"]), entry["outcome"]
                except (ValueError, KeyError, TypeError):
                    # A torn last line from a kill: that attempt is simply retried.
                    log.debug("%s line %d: unreadable journal entry skipped", journal, line_no)
                    continue
                if outcome == "error":  # failed attempts are retried
                    continue
                if outcome == "ok" and entry.get("id") not in state.seen:
                    continue  # its rows were cut from the manifest (a kill mid-write): try again
                state.attempted.setdefault(cell, set()).add(index)
    return state


def check_settings(out_dir: str | Path, settings: dict, write: bool = True) -> None:
    """Check that ``out_dir``'s collect.json matches ``settings`` (CollectError
    listing the differences if not); write it when absent and ``write``."""
    out_dir = Path(out_dir)
    path = out_dir / SETTINGS
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CollectError(f"{path}: unreadable ({exc}); remove it only if {out_dir} is a fresh folder") from None
        diff = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        if diff:
            details = "; ".join(f"{k}: was {stored.get(k)!r}, now {settings.get(k)!r}" for k in diff)
            raise CollectError(f"{out_dir} holds a collection made with other settings ({details}); "
                               "use the same settings to resume, or a new --out folder")
        return
    if not write:
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
