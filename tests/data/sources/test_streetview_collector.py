"""Street View collection against the local fake API: manifest rows, dedup,
per-cell targets, faults, budget, dry-run counts, resume and atomicity."""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_api import Pano
from PIL import Image

from geospot.data.sources.collect import JOURNAL, MANIFEST, CollectError, collect, group_points, plan
from geospot.data.sources.streetview import StreetViewSource, parse_size, sign_url

HEADINGS = (0.0, 90.0, 180.0, 270.0)
M_PER_DEG = 111_195.0


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / M_PER_DEG, lon + east_m / (M_PER_DEG * math.cos(math.radians(lat)))


def world(api, cells: int = 3, points: int = 8, hit_every: int = 2):
    """`cells` cells of `points` points each; every `hit_every`-th point has a pano 20 m north."""
    pts = []
    for c in range(cells):
        for i in range(points):
            lat, lon = 40.0 + c, 10.0 + 0.01 * i
            pts.append((f"cell{c}", lat, lon))
            if i % hit_every == 0:
                plat, plon = offset(lat, lon, 20.0, 0.0)
                api.panos.append(Pano(f"pano-{c}-{i}", plat, plon, date=f"20{10 + c}-0{1 + i % 9}"))
    return pts


def source(api, client, key=None, **kw) -> StreetViewSource:
    return StreetViewSource(client, key or api.key, base_url=api.streetview_url, size=(32, 32), **kw)


def rows(out: Path) -> list[dict]:
    with open(out / MANIFEST, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_consistent(out: Path, views: int = 4) -> list[dict]:
    """Every location complete, no duplicate rows, every file present and whole, no temp files."""
    table = rows(out)
    per_id = Counter(r["source_id"] for r in table)
    assert all(n == views for n in per_id.values()), per_id
    assert len({(r["source_id"], r["heading"]) for r in table}) == len(table)
    for r in table:
        with Image.open(out / r["path"]) as im:
            im.load()
    assert not list((out / ".tmp").glob("*")) if (out / ".tmp").exists() else True
    on_disk = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file()}
    assert on_disk == {r["path"] for r in table}
    return table


def test_manifest_rows_hold_the_pano_location(api, make_client, tmp_path):
    pts = world(api, cells=2, points=6)
    out = tmp_path / "sv"
    summary = collect(source(api, make_client()), pts, out, per_cell=3, concurrency=2, progress=False)
    assert summary.stop_reason is None and summary.locations_new == 6 and summary.cells_complete == 2
    table = assert_consistent(out)
    assert list(table[0]) == ["path", "lat", "lon", "location_id", "heading", "capture_date", "cell",
                              "source_id", "copyright"]
    panos = {p.pano_id: p for p in api.panos}
    sampled = {(lat, lon) for _, lat, lon in pts}
    for r in table:
        p = panos[r["location_id"]]
        assert r["source_id"] == r["location_id"] == p.pano_id
        assert (float(r["lat"]), float(r["lon"])) == pytest.approx((p.lat, p.lon), abs=1e-7)
        assert (float(r["lat"]), float(r["lon"])) not in sampled  # the pano, not the sampled point
        assert r["capture_date"] == p.date and r["copyright"] == "© Google"
        assert r["cell"] == "cell" + p.pano_id.split("-")[1]
        with Image.open(out / r["path"]) as im:
            assert im.size == (32, 32) and im.format == "JPEG"
    assert sorted({r["heading"] for r in table}) == ["0", "180", "270", "90"]
    # The images were asked with the documented parameters.
    image_queries = [q for e, q, _ in api.requests if e == "image"]
    assert all(q["size"] == "32x32" and q["fov"] == "90" and q["pitch"] == "0" and q["return_error_code"] == "true"
               for q in image_queries)
    meta_queries = [q for e, q, _ in api.requests if e == "metadata"]
    assert all(q["source"] == "outdoor" and q["radius"] == "50" for q in meta_queries)
    # Other modules read the manifest as is.
    from geospot.data.manifest import read_manifest

    manifest = read_manifest(out / MANIFEST)
    assert len(manifest) == 24 and set(manifest.df["location_id"]) == {r["location_id"] for r in table}


def test_dedup_and_exact_per_cell_targets(api, make_client, tmp_path):
    pts = []
    # cell A: ten points around one pano, then three points with their own panos.
    api.panos.append(Pano("shared", 10.0, 10.0))
    for i in range(10):
        pts.append(("A", *offset(10.0, 10.0, 5.0 * i, 0.0)))
    for i in range(3):
        lat, lon = 10.5, 10.0 + 0.01 * i
        pts.append(("A", lat, lon))
        api.panos.append(Pano(f"a{i}", lat, lon))
    # cell B: its first point finds the same shared pano (dedup across cells), then one pano of its own.
    pts.append(("B", *offset(10.0, 10.0, -5.0, 0.0)))
    pts.append(("B", 11.0, 11.0))
    api.panos.append(Pano("b0", 11.0, 11.0))
    pts.append(("B", 12.0, 12.0))  # no pano there
    # cell C: twenty panos, target 3 -> exactly three metadata requests even with 8 threads.
    for i in range(20):
        lat, lon = 20.0, 20.0 + 0.01 * i
        pts.append(("C", lat, lon))
        api.panos.append(Pano(f"c{i}", lat, lon))
    out = tmp_path / "sv"
    summary = collect(source(api, make_client()), pts, out, per_cell=3, concurrency=8, progress=False)
    table = assert_consistent(out)
    per_cell = Counter(r["cell"] for r in table if r["heading"] == "0")
    assert per_cell == {"A": 3, "B": 1, "C": 3}
    ids = [r["source_id"] for r in table if r["heading"] == "0"]
    assert len(ids) == len(set(ids)) and "shared" in ids
    assert summary.duplicates >= 1 and summary.cells_short == 1 and summary.missing == 2
    assert summary.short_examples == ["B (1/3)"]
    c_meta = [q for e, q, _ in api.requests if e == "metadata" and q["location"].startswith("20.0000000")]
    assert len(c_meta) == 3  # never more lookups in flight than the cell still needs
    assert sum(n for (pano, _), n in api.image_hits.items()) == 7 * 4  # no image fetched twice


def test_transient_faults_are_retried(api, make_client, tmp_path):
    pts = world(api, cells=2, points=6)
    api.inject("metadata", "500", times=2)
    api.inject("metadata", "429", times=2, arg=0.01)
    api.inject("metadata", "UNKNOWN_ERROR", times=1)
    api.inject("metadata", "OVER_QUERY_LIMIT", times=1)
    api.inject("image", "500", times=2)
    api.inject("image", "truncate", times=2)
    api.inject("image", "timeout", times=1, arg=0.5)
    client = make_client(retries=4, timeout_s=0.2)
    out = tmp_path / "sv"
    summary = collect(source(api, client), pts, out, per_cell=3, concurrency=3, progress=False)
    assert summary.stop_reason is None and summary.errors == 0 and summary.locations_new == 6
    assert summary.retries >= 11
    assert_consistent(out)


def test_persistent_over_query_limit_stops_cleanly(api, make_client, tmp_path):
    pts = world(api, cells=2, points=6)
    api.inject("metadata", "OVER_QUERY_LIMIT", times=None, location="41.0000000,10.0000000")
    out = tmp_path / "sv"
    summary = collect(source(api, make_client(retries=2)), pts, out, per_cell=3, concurrency=1, progress=False)
    assert summary.stop_kind == "fatal" and "OVER_QUERY_LIMIT" in summary.stop_reason
    assert summary.locations_new == 3  # cell0 was done before cell1's first point hit the limit
    assert_consistent(out)


@pytest.mark.parametrize("where", ["metadata", "image"])
def test_denied_key_stops_and_never_leaks(api, make_client, tmp_path, caplog, capsys, where):
    caplog.set_level(logging.DEBUG)
    pts = world(api, cells=2, points=4)
    bad_key = "AIzaBAD-key-0000000000000"
    out = tmp_path / "sv"
    if where == "metadata":
        src = source(api, make_client(), key=bad_key)
    else:  # metadata fine, then the image endpoint answers 403 with the URL echoed
        api.inject("image", "403", times=None)
        src = source(api, make_client())
        bad_key = api.key
    summary = collect(src, pts, out, per_cell=2, concurrency=2, progress=True)
    assert summary.stop_kind == "fatal" and summary.locations_new == 0
    assert ("REQUEST_DENIED" in summary.stop_reason) or ("403" in summary.stop_reason)
    captured = capsys.readouterr()
    texts = [summary.stop_reason, "\n".join(summary.lines()), caplog.text, captured.out, captured.err]
    assert all(bad_key not in t for t in texts)
    assert_no_key_in_folder(out, bad_key)


def assert_no_key_in_folder(out: Path, key: str) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_key_never_appears_in_outputs_or_logs(api, make_client, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    pts = world(api, cells=3, points=6)
    api.inject("metadata", "500", times=3)  # bodies echo the URL with the key
    api.inject("image", "404", times=2)  # a failed location, logged with its reason
    api.inject("image", "500", times=None, pano="pano-2-0")
    client = make_client(retries=1)
    summary = collect(source(api, client), pts, tmp_path / "sv", per_cell=2, concurrency=2, progress=True)
    assert summary.errors >= 2 and summary.locations_new >= 4
    assert "404" in caplog.text and "REDACTED" in caplog.text  # errors were logged, with the key scrubbed
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, "\n".join(summary.lines())):
        assert api.key not in text
    assert_no_key_in_folder(tmp_path / "sv", api.key)


def test_budget_stops_cleanly_and_a_rerun_resumes(api, make_client, tmp_path):
    pts = world(api, cells=3, points=8)
    out = tmp_path / "sv"
    first = collect(source(api, make_client(budget=23)), pts, out, per_cell=3, concurrency=2, progress=False)
    assert first.stop_kind == "budget" and "--budget" in first.stop_reason
    assert first.requests <= 23 and api.count("metadata") + api.count("image") <= 23
    done = {r["source_id"] for r in assert_consistent(out)}
    assert 0 < len(done) < 9
    second = collect(source(api, make_client()), pts, out, per_cell=3, concurrency=2, progress=False)
    assert second.stop_reason is None
    table = assert_consistent(out)
    assert Counter(r["cell"] for r in table if r["heading"] == "0") == {"cell0": 3, "cell1": 3, "cell2": 3}
    assert second.locations_new == 9 - len(done) and second.locations_total == 9
    assert all(n == 1 for n in api.image_hits.values())  # nothing downloaded twice


def test_dry_run_plan_matches_the_run(api, make_client, tmp_path):
    pts = world(api, cells=3, points=8)  # 4 panos per cell, 8 points per cell
    out = tmp_path / "sv"
    p = plan(pts, per_cell=3, views_per_location=4, out_dir=out)
    assert (p.cells, p.points, p.target_locations, p.already_collected) == (3, 24, 9, 0)
    assert (p.lookups_min, p.lookups_max, p.images_max) == (9, 24, 36)
    assert p.requests_range() == (45, 60)
    assert not out.exists()  # a dry run writes nothing
    text = "\n".join(p.lines("streetview"))
    assert "9 to 24" in text and "at most 36" in text
    summary = collect(source(api, make_client()), pts, out, per_cell=3, concurrency=1, progress=False)
    assert p.lookups_min <= api.count("metadata") <= p.lookups_max
    assert api.count("image") == p.images_max == summary.images_new
    assert api.count("metadata") == 3 * 5  # hits at points 0, 2, 4 of each cell
    again = plan(pts, per_cell=3, views_per_location=4, out_dir=out)
    assert again.already_collected == 9 and again.cells_already_done == 3 and again.requests_range() == (0, 0)
    more = plan(pts, per_cell=4, views_per_location=4, out_dir=out)
    assert (more.lookups_min, more.lookups_max, more.images_max) == (3, 9, 12)


def test_failure_mid_location_leaves_no_image_and_no_row(api, make_client, tmp_path):
    pts = world(api, cells=2, points=8)
    api.inject("image", "404", times=None, pano="pano-0-2", heading="180")  # the 3rd of 4 views fails
    api.inject("image", "garbage", times=None, pano="pano-1-4", heading="90")  # decodes as nothing
    out = tmp_path / "sv"
    summary = collect(source(api, make_client()), pts, out, per_cell=3, concurrency=2, progress=False)
    table = assert_consistent(out)
    ids = {r["source_id"] for r in table}
    assert "pano-0-2" not in ids and "pano-1-4" not in ids
    assert not any("pano-0-2" in p.name or "pano-1-4" in p.name for p in out.rglob("*.jpg"))
    assert summary.errors == 2 and summary.stop_reason is None
    assert Counter(r["cell"] for r in table if r["heading"] == "0") == {"cell0": 3, "cell1": 3}
    journal = [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]
    assert sum(e["outcome"] == "error" for e in journal) == 2


def test_consecutive_failures_stop_the_run(api, make_client, tmp_path):
    pts = world(api, cells=2, points=20, hit_every=1)
    api.inject("image", "404", times=None)
    summary = collect(source(api, make_client()), pts, tmp_path / "sv", per_cell=5, concurrency=2, progress=False,
                      max_consecutive_errors=6)
    assert summary.stop_kind == "errors" and "6 consecutive failed attempts" in summary.stop_reason
    assert summary.locations_new == 0 and api.count("metadata") < 12


def test_resume_reuses_images_renamed_before_a_kill(api, make_client, tmp_path):
    """A kill after the rename but before the manifest row: the rerun keeps the files."""
    pts = world(api, cells=2, points=6)
    out = tmp_path / "sv"
    collect(source(api, make_client()), pts, out, per_cell=3, concurrency=1, progress=False)
    table = rows(out)
    lost = table[-1]["source_id"]
    keep = [r for r in table if r["source_id"] != lost]
    with open(out / MANIFEST, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(keep)
    journal = [line for line in (out / JOURNAL).read_text().splitlines() if lost not in line]
    (out / JOURNAL).write_text("\n".join(journal) + "\n")
    hits_before = sum(api.image_hits.values())
    summary = collect(source(api, make_client()), pts, out, per_cell=3, concurrency=1, progress=False)
    assert summary.locations_new == 1 and summary.images_reused == 4 and summary.images_new == 0
    assert sum(api.image_hits.values()) == hits_before
    assert {r["source_id"] for r in assert_consistent(out)} == {r["source_id"] for r in table}


def test_torn_manifest_tail_is_repaired_on_resume(api, make_client, tmp_path, caplog):
    pts = world(api, cells=2, points=6)
    out = tmp_path / "sv"
    collect(source(api, make_client()), pts, out, per_cell=3, concurrency=1, progress=False)
    full = {r["source_id"] for r in rows(out)}
    text = (out / MANIFEST).read_text(encoding="utf-8").splitlines(keepends=True)
    # Drop the last two rows of the last location and leave half a line behind.
    (out / MANIFEST).write_text("".join(text[:-2]) + text[-2][:17], encoding="utf-8")
    caplog.set_level(logging.WARNING)
    collect(source(api, make_client()), pts, out, per_cell=3, concurrency=1, progress=False)
    assert "torn last line" in caplog.text and "incomplete location" in caplog.text
    assert {r["source_id"] for r in assert_consistent(out)} == full


_KILL_SCRIPT = """
import sys
from geospot.data.sources.http import HttpClient, RetryPolicy
from geospot.data.sources.streetview import StreetViewSource
from geospot.data.sources.collect import collect
base, key, out = sys.argv[1:4]
pts = [tuple(line.split(",")) for line in sys.stdin.read().split()]
client = HttpClient(timeout_s=2, retry=RetryPolicy(max_retries=2, base_delay_s=0.01))
collect(StreetViewSource(client, key, base_url=base, size=(32, 32)), pts, out, per_cell=10, concurrency=2,
        progress=False)
"""


def test_resume_after_sigkill_downloads_nothing_twice(api, make_client, tmp_path):
    pts = world(api, cells=3, points=12, hit_every=1)
    api.latency_s = 0.01
    out = tmp_path / "sv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, api.streetview_url, api.key, str(out)],
                            stdin=subprocess.PIPE, env=env, stderr=subprocess.PIPE)
    proc.stdin.write("\n".join(f"{c},{lat!r},{lon!r}" for c, lat, lon in pts).encode())
    proc.stdin.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / MANIFEST).exists() and (out / MANIFEST).read_text().count("\n") >= 30:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    before = {r["source_id"] for r in rows(out)} if (out / MANIFEST).exists() else set()
    assert 0 < len(before) < 30
    hits_before = dict(api.image_hits)
    api.latency_s = 0.0
    summary = collect(source(api, make_client()), pts, out, per_cell=10, concurrency=2, progress=False)
    table = assert_consistent(out)
    assert summary.stop_reason is None and summary.locations_total == 30
    assert Counter(r["cell"] for r in table if r["heading"] == "0") == {"cell0": 10, "cell1": 10, "cell2": 10}
    for (pano, heading), n in api.image_hits.items():
        if pano in before:  # already collected before the kill: never fetched again
            assert n == hits_before[(pano, heading)] == 1


def test_resume_with_other_settings_is_refused(api, make_client, tmp_path):
    pts = world(api, cells=1, points=4)
    out = tmp_path / "sv"
    collect(source(api, make_client()), pts, out, per_cell=1, progress=False, settings={"seed": 0})
    with pytest.raises(CollectError, match="other settings.*headings_deg"):
        collect(source(api, make_client(), headings_deg=(0, 180)), pts, out, per_cell=1, progress=False,
                settings={"seed": 0})
    with pytest.raises(CollectError, match="seed: was 0, now 1"):
        collect(source(api, make_client()), pts, out, per_cell=1, progress=False, settings={"seed": 1})
    # A larger target per cell is fine: it extends the collection.
    assert collect(source(api, make_client()), pts, out, per_cell=2, progress=False,
                   settings={"seed": 0}).locations_new == 1


def test_bad_points_and_parameters_are_named():
    with pytest.raises(CollectError, match="point 2: cell 'a' appears again"):
        list(group_points([("a", 1, 1), ("b", 1, 1), ("a", 1, 1)]))
    with pytest.raises(CollectError, match="point 1: coordinates out of range"):
        list(group_points([("a", 1, 1), ("a", 91, 1)]))
    with pytest.raises(CollectError, match="point 0: expected"):
        list(group_points([("a", "north", 1)]))
    assert parse_size("640x480") == (640, 480)
    for bad in ("641x10", "10", "axb"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_url_signing_matches_googles_reference():
    # The worked example of Google's "Digital signature" documentation.
    url = "https://maps.googleapis.com/maps/api/geocode/json?address=New+York&client=clientID"
    assert sign_url(url, "vNIXE0xscrmjlyV-12Nj_BvUPaw=") == url + "&signature=chaRF2hTJKOScPr-RQCEhZbSzIE="


def test_ctrl_c_leaves_a_consistent_folder_that_resumes(api, make_client, tmp_path):
    pts = world(api, cells=3, points=8)

    class Interrupting(StreetViewSource):
        calls = 0

        def lookup(self, lat_deg, lon_deg):
            Interrupting.calls += 1
            if Interrupting.calls == 9:
                raise KeyboardInterrupt
            return super().lookup(lat_deg, lon_deg)

    out = tmp_path / "sv"
    interrupting = Interrupting(make_client(), api.key, base_url=api.streetview_url, size=(32, 32))
    with pytest.raises(KeyboardInterrupt):
        collect(interrupting, pts, out, per_cell=3, concurrency=3, progress=False)
    before = {r["source_id"] for r in assert_consistent(out)}
    assert 0 < len(before) < 9
    hits = dict(api.image_hits)
    summary = collect(source(api, make_client()), pts, out, per_cell=3, concurrency=3, progress=False)
    assert summary.stop_reason is None and summary.locations_total == 9
    assert_consistent(out)
    assert all(api.image_hits[k] == 1 for k in api.image_hits if k[0] in before)
    assert all(hits[k] == api.image_hits[k] for k in hits if k[0] in before)


def test_two_collectors_never_share_a_folder(api, make_client, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "sv"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # another process holding the folder
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CollectError, match="another collector is writing"):
            collect(source(api, make_client()), world(api, cells=1, points=2), out, per_cell=1, progress=False)
    assert collect(source(api, make_client()), [("c", 1.0, 1.0)], out, per_cell=1, progress=False).empty == 1


def test_a_foreign_manifest_is_never_touched(api, make_client, tmp_path):
    out = tmp_path / "sv"
    out.mkdir()
    foreign = "path,lat,lon\na.jpg,1,2\nb.jpg,3,"  # no newline at the end: would look torn
    (out / MANIFEST).write_text(foreign)
    with pytest.raises(CollectError, match="not a collector manifest"):
        collect(source(api, make_client()), world(api, cells=1, points=2), out, per_cell=1, progress=False)
    assert (out / MANIFEST).read_text() == foreign
