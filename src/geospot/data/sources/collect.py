"""The shared engine of the street-level imagery collectors.

Given sample points grouped by cell — ``(cell_id, lat_deg, lon_deg)`` rows,
all points of one cell contiguous, in the order they should be tried — the
engine asks a *source* (Street View, Mapillary) for the imagery nearest each
point and keeps what it finds, until every cell holds ``per_cell`` distinct
locations or has no points left (its attempt budget). This is the loop of
the original article: overlay cells on a region, sample points in every
cell, fetch the imagery nearest each point at several headings.

Output folder::

    manifest.csv     path,lat,lon,location_id,heading,capture_date,cell,source_id,copyright
    images/ab/...    one file per view, sharded by a hash of the source id
    attempts.jsonl   journal: one line per finished attempt (cell, point index, outcome)
    collect.json     the settings that define the collection (never a key)

Guarantees
- Atomic: a location's views are downloaded to ``.tmp/``, decoded to prove
  they are whole, then renamed into ``images/``; only then are its manifest
  rows appended (one write + flush). A failure mid-location removes its
  temporary files: no image, no row.
- Resumable: kill it and rerun with the same arguments. The manifest is the
  truth: on start a torn last line or an incomplete last location is cut off,
  and the seen source ids and per-cell counts are rebuilt from it; the journal
  says which points were already tried (failed attempts are retried). Views
  renamed into ``images/`` just before a kill are reused, not downloaded again.
- Deduplicated by source id (pano id / image id) across the whole collection.
- Memory: rows are streamed to disk, never kept, and points are consumed as
  a stream: only a window of ``2 * concurrency`` cells (and their points) is
  active at a time. What grows is one set of source ids (~0.2 kB per
  location) and, on a resumed run, the journal's attempted-point indices of
  unfinished cells. Measured (benchmarks/bench_collect.py --memory, stub
  source, 1 image per location): peak RSS 48 MB for 10k locations, 65 MB for
  100k; the difference is that id set.
- Requests: bounded by a thread pool (``concurrency``), the client's rate
  limiter and its request budget; when the budget (or a fatal API error:
  denied key, exhausted quota) stops the run, in-flight locations finish or
  are discarded cleanly and the summary says why.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

# The output folder's names, the source API and resuming live in their own modules; re-exported here.
from geospot.data.sources.collect_resume import ResumeState, check_settings, load_state  # noqa: F401
from geospot.data.sources.collect_types import (  # noqa: F401
    IMAGES, JOURNAL, LOCK, MANIFEST, MANIFEST_COLUMNS, SETTINGS, TMP, CollectError, FatalSourceError, Location,
    LocationError, Source, View,
)
from geospot.data.sources.http import BudgetExhausted, Cancelled, HttpError

log = logging.getLogger("geospot.data.collect")

_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


# ---------------------------------------------------------------- points
def group_points(points: Iterable[Sequence]) -> Iterator[tuple[str, list[tuple[float, float]]]]:
    """Group ``(cell_id, lat_deg, lon_deg)`` rows into ``(cell_id, [(lat, lon), ...])``.

    Points of a cell must be contiguous (the sampler emits them so); a cell
    that reappears later, or a bad coordinate, raises :class:`CollectError`
    naming the row (0-based).
    """
    finished: set[str] = set()
    current: str | None = None
    bucket: list[tuple[float, float]] = []
    for row_no, row in enumerate(points):
        try:
            cell, lat, lon = str(row[0]), float(row[1]), float(row[2])
        except (TypeError, ValueError, IndexError) as exc:
            raise CollectError(f"point {row_no}: expected (cell, lat, lon), got {row!r} ({exc})") from None
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0 and math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise CollectError(f"point {row_no}: coordinates out of range: lat={lat}, lon={lon}")
        if cell != current:
            if current is not None:
                yield current, bucket
                finished.add(current)
            if cell in finished:
                raise CollectError(f"point {row_no}: cell {cell!r} appears again after other cells; "
                                   "points of a cell must be contiguous")
            current, bucket = cell, []
        bucket.append((lat, lon))
    if current is not None:
        yield current, bucket


# ---------------------------------------------------------------- output folder
def _shard(source_id: str) -> str:
    return hashlib.sha1(source_id.encode("utf-8")).hexdigest()[:2]


def view_relpath(source_id: str, view: View, ext: str) -> str:
    """Where a view's image lives, relative to the output folder."""
    return f"{IMAGES}/{_shard(source_id)}/{_SAFE_NAME.sub('_', view.name)}.{ext}"


def _csv_line(values: Sequence[object]) -> str:
    out = io.StringIO()
    import csv

    csv.writer(out, lineterminator="\n").writerow(
        ["" if v is None else str(v).replace("\n", " ").replace("\r", " ") for v in values])
    return out.getvalue()


def _image_ext(data: bytes, what: str) -> str:
    """File extension of whole, decodable image bytes; LocationError otherwise."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()  # a full decode proves the file is whole
    except Exception as exc:  # PIL raises many types for bad data
        raise LocationError(f"{what} is not a whole image ({type(exc).__name__}: {exc})") from None
    if fmt not in _FORMATS:
        raise LocationError(f"{what} has unsupported image format {fmt}")
    return _FORMATS[fmt]


def _fmt_heading(value: float | None) -> str:
    return "" if value is None else f"{round(float(value), 2):g}"


# ---------------------------------------------------------------- plan (dry run)
@dataclass
class Plan:
    """Expected work of a run (what ``--dry-run`` prints)."""

    cells: int = 0
    points: int = 0
    target_locations: int = 0
    already_collected: int = 0
    cells_already_done: int = 0
    lookups_min: int = 0
    lookups_max: int = 0
    images_max: int = 0
    requests_per_lookup: int = 1

    def requests_range(self) -> tuple[int, int]:
        return (self.lookups_min * self.requests_per_lookup + self.images_max,
                self.lookups_max * self.requests_per_lookup + self.images_max)

    def lines(self, source: str) -> list[str]:
        lo, hi = self.requests_range()
        return [
            f"source: {source}",
            f"cells: {self.cells} ({self.cells_already_done} already complete)",
            f"sample points: {self.points}",
            f"locations: target {self.target_locations}, already collected {self.already_collected}, "
            f"to collect at most {self.target_locations - self.already_collected}",
            f"lookup (metadata) requests: {self.lookups_min} to {self.lookups_max} "
            f"({self.requests_per_lookup} request(s) each)",
            f"image requests: at most {self.images_max}",
            f"total requests: {lo} to {hi} (without retries)",
        ]


def plan(points: Iterable[Sequence], per_cell: int, views_per_location: int, out_dir: str | Path,
         requests_per_lookup: int = 1) -> Plan:
    """Count the requests a run would make, taking a resumable folder into account.

    Lookups: at least one per missing location (every point hits), at most
    one per untried point. Images: ``views_per_location`` per missing location.
    """
    if per_cell < 1:
        raise CollectError(f"per_cell must be >= 1, got {per_cell}")
    out = Path(out_dir)
    state = load_state(out, views_per_location) if out.exists() else ResumeState()
    p = Plan(requests_per_lookup=requests_per_lookup)
    for cell, pts in group_points(points):
        p.cells += 1
        p.points += len(pts)
        done = min(state.cell_done.get(cell, 0), per_cell)
        p.target_locations += per_cell
        p.already_collected += done
        untried = len(pts) - len(state.attempted.get(cell, ()))
        need = per_cell - done
        if need <= 0 or untried <= 0:
            p.cells_already_done += need <= 0
            continue
        p.lookups_min += min(need, untried)
        p.lookups_max += untried
        p.images_max += min(need, untried) * views_per_location
    return p


# ---------------------------------------------------------------- the run
@dataclass
class Summary:
    """What a run did, and why it stopped (``stop_reason`` None = finished)."""

    locations_new: int = 0
    images_new: int = 0
    images_reused: int = 0
    locations_total: int = 0
    cells: int = 0
    cells_complete: int = 0
    cells_short: int = 0
    missing: int = 0
    empty: int = 0
    duplicates: int = 0
    errors: int = 0
    requests: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    stop_reason: str | None = None
    stop_kind: str | None = None  # None (finished) | budget | fatal | errors | interrupted
    short_examples: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.locations_new / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [
            f"collected {self.locations_new} new location(s) ({self.images_new} images downloaded, "
            f"{self.images_reused} reused); {self.locations_total} in the manifest",
            f"cells: {self.cells} seen, {self.cells_complete} complete, {self.cells_short} short "
            f"by {self.missing} location(s) after trying all their points",
            f"attempts: {self.empty} without imagery, {self.duplicates} duplicates, {self.errors} failed",
            f"requests: {self.requests} ({self.retries} retries) in {self.elapsed_s:.1f} s ({rate:.2f} locations/s)",
        ]
        if self.short_examples:
            out.append("short cells (first few): " + ", ".join(self.short_examples))
        out.append("stopped: " + self.stop_reason if self.stop_reason else "finished")
        return out


@dataclass
class _Cell:
    cell_id: str
    points: list[tuple[float, float]]
    done: int
    attempted: set[int]
    next_index: int = 0
    pending: int = 0

    def next_point(self) -> int | None:
        while self.next_index < len(self.points) and self.next_index in self.attempted:
            self.next_index += 1
        return self.next_index if self.next_index < len(self.points) else None


@dataclass
class _Outcome:
    kind: str  # ok | empty | duplicate
    location: Location | None = None
    relpaths: list[str] = field(default_factory=list)
    downloaded: int = 0
    reused: int = 0


class Collector:
    """Runs one collection into ``out_dir``. See :func:`collect`."""

    def __init__(self, source: Source, out_dir: str | Path, per_cell: int, concurrency: int = 4,
                 settings: dict | None = None, progress: bool = True, max_consecutive_errors: int = 25):
        if per_cell < 1:
            raise CollectError(f"per_cell must be >= 1, got {per_cell}")
        if concurrency < 1:
            raise CollectError(f"concurrency must be >= 1, got {concurrency}")
        self.source, self.out, self.per_cell = source, Path(out_dir), per_cell
        self.concurrency, self.progress = concurrency, progress
        self.max_consecutive_errors = max_consecutive_errors
        self.settings = {"source": source.name, **source.identity(), **(settings or {})}
        self._lock = threading.Lock()
        self._reserved: set[str] = set()
        self._stop = threading.Event()  # no new attempts
        self._abort = threading.Event()  # also abandon the locations being downloaded

    # -- worker side (threads) ------------------------------------------
    def _attempt(self, lat: float, lon: float) -> _Outcome:
        if self._stop.is_set():
            raise Cancelled()
        candidates = self.source.lookup(lat, lon)
        if not candidates:
            return _Outcome("empty")
        with self._lock:
            chosen = next((c for c in candidates
                           if c.source_id not in self.state.seen and c.source_id not in self._reserved), None)
            if chosen is None:
                return _Outcome("duplicate")
            self._reserved.add(chosen.source_id)
        try:
            return self._download(chosen)
        except BaseException:
            with self._lock:
                self._reserved.discard(chosen.source_id)
            raise

    def _download(self, loc: Location) -> _Outcome:
        if not loc.views:
            raise LocationError(f"{loc.source_id}: the source returned no views")
        staged: list[tuple[Path | None, Path]] = []  # (tmp, or None when reused; final)
        outcome = _Outcome("ok", loc)
        try:
            existing = [self._existing(loc.source_id, view) for view in loc.views]
            # All of the location's image requests or none: never half a location on a budget stop.
            self.source.client.budget.prepay(sum(e is None for e in existing))
            for view, found in zip(loc.views, existing):
                if found is not None:  # renamed into place just before a kill: whole, keep it
                    staged.append((None, found))
                    outcome.relpaths.append(found.relative_to(self.out).as_posix())
                    outcome.reused += 1
                    continue
                if self._abort.is_set():
                    raise Cancelled()
                data = self.source.fetch(view)
                ext = _image_ext(data, f"{loc.source_id}: view {view.name}")
                rel = view_relpath(loc.source_id, view, ext)
                tmp = self.out / TMP / f"{uuid.uuid4().hex}.part"
                staged.append((tmp, self.out / rel))
                with open(tmp, "wb") as f:
                    f.write(data)
                outcome.relpaths.append(rel)
                outcome.downloaded += 1
            for tmp, final in staged:  # every view is whole: publish them
                if tmp is not None:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, final)
            return outcome
        except BaseException:
            for tmp, final in staged:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
            raise
        finally:
            self.source.client.budget.refund()

    def _existing(self, source_id: str, view: View) -> Path | None:
        for ext in _FORMATS.values():
            path = self.out / view_relpath(source_id, view, ext)
            if path.is_file() and path.stat().st_size > 0:
                return path
        return None

    # -- main thread -------------------------------------------------------
    def run(self, points: Iterable[Sequence]) -> Summary:
        """Collect from ``points``; see :func:`collect`."""
        self.out.mkdir(parents=True, exist_ok=True)
        lock = _lock_folder(self.out)
        try:
            return self._run(points)
        finally:
            lock.close()  # releases the lock

    def _run(self, points: Iterable[Sequence]) -> Summary:
        from tqdm import tqdm

        check_settings(self.out, self.settings)
        self._stop.clear()
        self._abort.clear()
        self._reserved.clear()
        shutil.rmtree(self.out / TMP, ignore_errors=True)
        (self.out / TMP).mkdir()
        self.state = load_state(self.out, self.source.views_per_location)
        for note in self.state.repaired:
            log.warning("resume: %s", note)
        summary = Summary(locations_total=len(self.state.seen))
        if self.state.seen:
            log.info("resuming: %d location(s) already in %s", len(self.state.seen), self.out / MANIFEST)
        t0 = time.monotonic()
        req0, retry0 = self.source.client.requests, self.source.client.retries

        manifest_path = self.out / MANIFEST
        new_manifest = not manifest_path.exists() or manifest_path.stat().st_size == 0
        manifest = open(manifest_path, "a", encoding="utf-8", newline="")
        journal = open(self.out / JOURNAL, "a", encoding="utf-8")
        if new_manifest:
            manifest.write(_csv_line(MANIFEST_COLUMNS))
            manifest.flush()

        cells = group_points(points)
        window = max(2, 2 * self.concurrency)
        active: deque[_Cell] = deque()
        in_flight: dict[Future, tuple[_Cell, int]] = {}
        exhausted_input = False
        consecutive_errors = 0
        bar = tqdm(total=0, unit="loc", desc=f"{self.source.name}", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="geospot-collect")

        def load_cell() -> bool:
            nonlocal exhausted_input
            while not exhausted_input:
                try:
                    cell_id, pts = next(cells)
                except StopIteration:
                    exhausted_input = True
                    return False
                summary.cells += 1
                done = self.state.cell_done.get(cell_id, 0)
                attempted = self.state.attempted.pop(cell_id, set())
                cell = _Cell(cell_id, pts, done, attempted)
                if done >= self.per_cell:
                    summary.cells_complete += 1
                    continue
                if cell.next_point() is None:
                    self._finish_short(cell, summary)
                    continue
                bar.total += self.per_cell - done
                bar.refresh()
                active.append(cell)
                return True
            return False

        def fill() -> None:
            rotations = 0
            while len(in_flight) < self.concurrency and not self._stop.is_set():
                if not active or rotations >= len(active):
                    if len(active) < window and load_cell():
                        rotations = 0
                        continue
                    return
                cell = active[0]
                active.rotate(-1)  # round robin across active cells
                index = cell.next_point() if cell.done + cell.pending < self.per_cell else None
                if index is None:
                    rotations += 1
                    continue
                rotations = 0
                cell.attempted.add(index)
                cell.pending += 1
                lat, lon = cell.points[index]
                in_flight[pool.submit(self._attempt, lat, lon)] = (cell, index)

        def retire_finished() -> None:
            for cell in list(active):
                if cell.pending:
                    continue
                if cell.done >= self.per_cell:
                    summary.cells_complete += 1
                    active.remove(cell)
                elif cell.next_point() is None:
                    self._finish_short(cell, summary)
                    bar.total -= self.per_cell - cell.done
                    bar.refresh()
                    active.remove(cell)

        def stop(reason: str, kind: str) -> None:
            if summary.stop_reason is None:
                summary.stop_reason, summary.stop_kind = reason, kind
            self._stop.set()
            if kind in ("fatal", "interrupted"):
                # Nothing more will succeed (or the user wants out now): abandon in-flight
                # work. A budget stop lets prepaid locations finish instead.
                self._abort.set()
                self.source.client.cancel()

        try:
            try:
                fill()
                while in_flight:
                    finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                    for fut in finished:
                        cell, index = in_flight.pop(fut)
                        cell.pending -= 1
                        consecutive_errors = self._handle(fut, cell, index, manifest, journal, summary, bar,
                                                          consecutive_errors, stop)
                    retire_finished()
                    fill()
            except KeyboardInterrupt:
                stop("interrupted", "interrupted")
                for fut in list(in_flight):
                    if fut.cancel():
                        in_flight.pop(fut)
                for fut in list(in_flight):  # running ones end quickly: the client is cancelled
                    cell, index = in_flight.pop(fut)
                    self._handle(fut, cell, index, manifest, journal, summary, bar, 0, stop)
                raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            manifest.close()
            journal.close()
            shutil.rmtree(self.out / TMP, ignore_errors=True)
            summary.elapsed_s = time.monotonic() - t0
            summary.requests = self.source.client.requests - req0
            summary.retries = self.source.client.retries - retry0
            summary.locations_total = len(self.state.seen)
        if summary.stop_reason is None and summary.errors and not (
                summary.locations_new or summary.empty or summary.duplicates):
            # a run in which nothing succeeded is a failure, not "finished" (fewer errors than the
            # consecutive-error stop would otherwise exit 0 with nothing collected)
            summary.stop_reason = (f"every attempt failed ({summary.errors} of {summary.errors}); last: "
                                   f"{getattr(self, '_last_error', 'unknown error')}")
            summary.stop_kind = "errors"
        return summary

    def _finish_short(self, cell: _Cell, summary: Summary) -> None:
        summary.cells_short += 1
        summary.missing += self.per_cell - cell.done
        if len(summary.short_examples) < 5:
            summary.short_examples.append(f"{cell.cell_id} ({cell.done}/{self.per_cell})")

    def _handle(self, fut: Future, cell: _Cell, index: int, manifest, journal, summary: Summary, bar,
                consecutive_errors: int, stop) -> int:
        """Record one finished attempt; returns the new consecutive-error count."""
        try:
            outcome: _Outcome = fut.result()
        except Cancelled:
            return consecutive_errors
        except BudgetExhausted as exc:
            stop(str(exc), "budget")
            return consecutive_errors
        except FatalSourceError as exc:
            stop(f"{self.source.name} refused the request: {self.source.client.redact(exc)}", "fatal")
            return consecutive_errors
        except (LocationError, HttpError) as exc:
            if self._abort.is_set():  # a side effect of stopping, not a real failure
                return consecutive_errors
            summary.errors += 1
            self._journal(journal, cell, index, "error")
            self._last_error = self.source.client.redact(exc)
            log.warning("cell %s point %d: %s", cell.cell_id, index, self._last_error)
            consecutive_errors += 1
            if consecutive_errors >= self.max_consecutive_errors:
                stop(f"{consecutive_errors} consecutive failed attempts; last: {self.source.client.redact(exc)}",
                     "errors")
            return consecutive_errors
        if outcome.kind == "ok":
            loc = outcome.location
            lines = "".join(
                _csv_line([rel, f"{loc.lat:.7f}", f"{loc.lon:.7f}", loc.location_id, _fmt_heading(view.heading_deg),
                           loc.capture_date, cell.cell_id, loc.source_id, loc.copyright])
                for rel, view in zip(outcome.relpaths, loc.views))
            manifest.write(lines)  # one write per location: never half a location on a kill
            manifest.flush()
            with self._lock:
                self.state.seen.add(loc.source_id)
                self._reserved.discard(loc.source_id)
            cell.done += 1
            summary.locations_new += 1
            summary.images_new += outcome.downloaded
            summary.images_reused += outcome.reused
            bar.update(1)
        elif outcome.kind == "empty":
            summary.empty += 1
        else:
            summary.duplicates += 1
        self._journal(journal, cell, index, outcome.kind, outcome.location.source_id if outcome.location else None)
        bar.set_postfix(req=self.source.client.requests, empty=summary.empty, dup=summary.duplicates,
                        err=summary.errors, refresh=False)
        return 0

    @staticmethod
    def _journal(journal, cell: _Cell, index: int, outcome: str, source_id: str | None = None) -> None:
        entry = {"cell": cell.cell_id, "i": index, "outcome": outcome}
        if source_id:
            entry["id"] = source_id
        journal.write(json.dumps(entry) + "\n")
        journal.flush()


def _lock_folder(out: Path):
    """An exclusive lock on ``out`` for this process (two writers would corrupt it).
    Released when the returned file is closed or the process dies."""
    handle = open(out / LOCK, "a+")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one writer is the user's job
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise CollectError(f"{out}: another collector is writing to this folder") from None
    return handle


def collect(source: Source, points: Iterable[Sequence], out_dir: str | Path, per_cell: int,
            concurrency: int = 4, settings: dict | None = None, progress: bool = True,
            max_consecutive_errors: int = 25) -> Summary:
    """Collect up to ``per_cell`` locations per cell into ``out_dir``.

    ``points``: ``(cell_id, lat_deg, lon_deg)`` rows, each cell's points
    contiguous and in the order to try them (their count is the cell's
    attempt budget). ``settings``: extra values that define the collection
    (region, grid, seed, ...) checked when resuming. Returns a
    :class:`Summary`; stops early (``summary.stop_reason``) on an exhausted
    request budget, a fatal API error, ``max_consecutive_errors`` failed
    attempts in a row, or Ctrl-C (re-raised after the folder is consistent).
    """
    return Collector(source, out_dir, per_cell, concurrency, settings, progress, max_consecutive_errors).run(points)
