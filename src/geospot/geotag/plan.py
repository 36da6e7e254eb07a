"""Plan a geotag run: which photos need a position, locate them (alone or as albums), gate by confidence.

Nothing is written here. Photos that already have GPS (EXIF, embedded XMP or
a sidecar) are settled before any model runs. Locating goes through a
`predict(paths, same_place)` callable with the contract of
`geospot.predict.Predictor.predict` (objects with `.to_dict()`: lat, lon,
radius_km, top_cells, country...; failures carry `error`).

Albums (`grouping`):
- None: every photo on its own;
- 'all' (`--same-place`): all photos show one place: one fused answer;
- 'folder': the photos of each folder are one place;
- 'time': photos sorted by EXIF DateTimeOriginal; a gap longer than
  `gap_minutes` starts a new album. Photos without a capture time are located
  on their own.
Each album is located with same-place fusion (embeddings averaged, as
`geospot locate --same-place`), and every photo of it gets that answer.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from geospot.geotag.changelog import sha256_file
from geospot.geotag.writer import existing_gps, write_method
from geospot.geotag.xmp import sidecar_path

GROUPINGS = (None, "all", "folder", "time")
CHUNK = 256  # photos per predict call for singles: bounded memory, progress on big libraries


@dataclass
class Proposal:
    path: str
    status: str  # propose | below-gate | has-gps | done | failed
    reason: str = ""
    method: str = ""  # exif | sidecar
    group: str = ""
    lat: float | None = None
    lon: float | None = None
    radius50_km: float | None = None
    radius90_km: float | None = None
    top_prob: float | None = None
    country: str = ""
    region: str = ""
    city: str = ""
    extra: dict = field(default_factory=dict)

    def to_row(self) -> dict:
        row = asdict(self)
        row.pop("extra")
        row["path"] = os.path.abspath(self.path)  # the reviewed CSV applies from any folder
        row["decision"] = "write" if self.status == "propose" else "skip"
        return row


def _capture_time(path: str) -> datetime | None:
    from geospot.data.importers import read_datetime_original

    iso = read_datetime_original(path)
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso[:19])  # local camera time; offsets are rare and ignored
    except ValueError:
        return None


def group_photos(files: Sequence[str], grouping: str | None, gap_minutes: float = 60.0) -> list[tuple[str, list[str]]]:
    """[(album name, photos)]; singles are albums of one named after the photo."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if grouping is None:
        return [(f, [f]) for f in files]
    if grouping == "all":
        return [("all", list(files))] if files else []
    if grouping == "folder":
        albums: dict[str, list[str]] = {}
        for f in files:
            albums.setdefault(str(Path(f).parent), []).append(f)
        return list(albums.items())
    timed, untimed = [], []
    for f in files:
        t = _capture_time(f)
        (timed if t else untimed).append((t, f))
    timed.sort()
    out: list[tuple[str, list[str]]] = []
    last = None
    for t, f in timed:
        if last is None or (t - last).total_seconds() > gap_minutes * 60:
            out.append((f"time {t:%Y-%m-%d %H:%M}", []))
        out[-1][1].append(f)
        last = t
    return out + [(f, [f]) for _, f in untimed]


HALF_CIRCUMFERENCE_KM = 20015.1


def cell_floor_km(top_cells: list[dict]) -> float:
    """Half the distance from the top cell's centroid to the nearest other candidate cell.

    The model's confidence radius counts each cell at its centroid, so when one
    cell holds 90% of the probability the radius is ~0 km however large that
    cell is. Cells tile the map, so the nearest other cell among the top k is
    at least a neighbour: half that distance approximates the top cell's
    half-width (larger when the candidates are far apart: the safe side)."""
    from geospot.geo.distance import haversine_km

    if len(top_cells) < 2:
        return HALF_CIRCUMFERENCE_KM  # one cell: the model cannot say where inside it
    top = top_cells[0]
    d = haversine_km(top["lat"], top["lon"], [c["lat"] for c in top_cells[1:]], [c["lon"] for c in top_cells[1:]])
    return float(min(d)) / 2.0


def _fill(prop: Proposal, result: dict, max_radius_km: float | None, min_prob: float) -> None:
    prop.lat, prop.lon = float(result["lat"]), float(result["lon"])
    cells = result.get("top_cells") or []
    floor = cell_floor_km(cells)
    if floor > float(result["radius_km"]["90"]):
        prop.extra["cell_floor_km"] = floor
    # never claim more precision than the top cell's own size
    prop.radius50_km = max(float(result["radius_km"]["50"]), floor)
    prop.radius90_km = max(float(result["radius_km"]["90"]), floor)
    prop.top_prob = float(cells[0]["prob"]) if cells else None
    prop.country, prop.region, prop.city = result.get("country", ""), result.get("region", ""), result.get("city", "")
    if max_radius_km is not None and prop.radius90_km > max_radius_km:
        why = " (the top cell's size)" if "cell_floor_km" in prop.extra else ""
        prop.status, prop.reason = "below-gate", f"90% radius {prop.radius90_km:.0f} km{why} > {max_radius_km:g} km"
    elif prop.top_prob is not None and prop.top_prob < min_prob:
        prop.status, prop.reason = "below-gate", f"top cell probability {prop.top_prob:.3f} < {min_prob:g}"
    else:
        prop.status = "propose"


def plan(files: Sequence[str], predict: Callable, *, max_radius_km: float | None = None, min_prob: float = 0.0,
         grouping: str | None = None, gap_minutes: float = 60.0, overwrite: bool = False,
         force_sidecar: bool = False, sidecar_style: str = "ext", done: set | None = None,
         progress: bool = False) -> list[Proposal]:
    """One Proposal per input photo, in input order."""
    props = {f: Proposal(f, "failed") for f in files}
    done_targets = {t for t, _ in done} if done else set()
    todo = []
    for f in files:
        p = props[f]
        try:
            p.method = write_method(f, force_sidecar)
            real = os.path.realpath(f)
            target = real if p.method == "exif" else str(sidecar_path(real, sidecar_style))
            if target in done_targets and (target, sha256_file(target)) in done:  # hash only logged files
                p.status, p.reason = "done", "already geotagged (per the log)"
                continue
            where = None if overwrite else existing_gps(f, sidecar_style)
        except OSError as exc:
            p.reason = exc.strerror or str(exc)
            continue
        except ValueError as exc:  # unreadable metadata: report this photo, keep going
            p.reason = str(exc)
            continue
        if where:
            p.status, p.reason = "has-gps", f"already has GPS ({where})"
            continue
        todo.append(f)
    albums = group_photos(todo, grouping, gap_minutes)
    singles = [fs[0] for _, fs in albums if len(fs) == 1]
    for start in range(0, len(singles), CHUNK):
        chunk = singles[start:start + CHUNK]
        if progress and len(singles) > CHUNK:
            print(f"locating {start + 1}-{start + len(chunk)} of {len(singles)} photos", file=sys.stderr)
        for f, result in zip(chunk, predict(chunk, same_place=False)):
            _apply_result(props[f], result.to_dict(), "", max_radius_km, min_prob)
    for name, fs in albums:
        if len(fs) < 2:
            continue
        results = [r.to_dict() for r in predict(fs, same_place=True)]
        for r in results:
            for f in r.get("paths") or [r["path"]]:
                _apply_result(props[f], r, name, max_radius_km, min_prob)
    return [props[f] for f in files]


def _apply_result(prop: Proposal, result: dict, group: str, max_radius_km, min_prob) -> None:
    prop.group = group
    if "error" in result:
        prop.status, prop.reason = "failed", f"cannot locate: {result['error']}"
        return
    if len(result.get("paths") or []) > 1:
        prop.extra["album_size"] = len(result["paths"])
    _fill(prop, result, max_radius_km, min_prob)
