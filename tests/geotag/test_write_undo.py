"""Writes are verified, logged before they land, atomic, keep file times; undo gives back every byte."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import geospot.geotag.atomic as atomic
from geospot.geotag.changelog import ChangeLog, read_log, undo
from geospot.geotag.fix import GpsFix
from geospot.geotag.jpeg import read_exif_gps
from geospot.geotag.writer import existing_gps, write_fix, write_method
from geospot.geotag.xmp import read_sidecar_gps, sidecar_path

from .exif_fixtures import build_tiff, jpeg_bytes

FIX = GpsFix(45.8331, 16.4325, radius_m=2500.0, method="geospot test")
OLD_TIME = (1_500_000_000_123_456_789, 1_400_000_000_987_654_321)  # (atime, mtime) in ns


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _photo(tmp_path, name="a.jpg", exif=True, seed=0):
    p = tmp_path / name
    p.write_bytes(jpeg_bytes(build_tiff("<") if exif else None, seed=seed))
    os.utime(p, ns=OLD_TIME)
    return p


def _png(tmp_path, name="b.png"):
    p = tmp_path / name
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p)
    return p


def test_jpeg_write_keeps_times_logs_and_undo_restores_bytes(tmp_path):
    photo = _photo(tmp_path)
    before = _sha(photo)
    os.utime(photo, ns=OLD_TIME)
    log = ChangeLog(tmp_path / "log.csv")
    out = write_fix(photo, FIX, method="exif", log=log)
    assert out.status == "written", out.message
    st = photo.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == OLD_TIME
    assert read_exif_gps(photo.read_bytes())["lat"] == FIX.lat
    rows = read_log(log.path)
    assert len(rows) == 1 and rows[0]["action"] == "exif" and rows[0]["sha256_before"] == before
    assert rows[0]["sha256_after"] == _sha(photo)
    assert not list(tmp_path.glob("*" + atomic.TMP_SUFFIX))
    # a photo with GPS is left alone unless overwrite
    assert write_fix(photo, GpsFix(1, 1), method="exif", log=log).status == "has-gps"
    assert [r.status for r in undo(log.path)] == ["restored"]
    st = photo.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == OLD_TIME  # the times logged before the write
    assert _sha(photo) == before
    assert [r.status for r in undo(log.path)] == ["already-original"]  # undo twice is harmless


def test_overwrite_twice_unwinds_in_order(tmp_path):
    photo = _photo(tmp_path, exif=False)
    before = _sha(photo)
    log = ChangeLog(tmp_path / "log.csv")
    for lat in (10.0, 20.0):
        assert write_fix(photo, GpsFix(lat, 3.0), method="exif", log=log, overwrite=True).status == "written"
    assert read_exif_gps(photo.read_bytes())["lat"] == 20.0
    assert [r.status for r in undo(log.path)] == ["restored", "restored"]
    assert _sha(photo) == before


def test_dry_run_changes_nothing(tmp_path):
    photo = _photo(tmp_path)
    before = _sha(photo)
    out = write_fix(photo, FIX, method="exif", log=None, dry_run=True)
    assert out.status == "would-write" and _sha(photo) == before
    assert write_fix(_png(tmp_path), FIX, method="sidecar", log=None, dry_run=True).status == "would-write"
    assert not list(tmp_path.glob("*.xmp"))


def test_crash_before_rename_leaves_photo_untouched_and_rerun_completes(tmp_path, monkeypatch):
    photo = _photo(tmp_path)
    before = _sha(photo)
    log = ChangeLog(tmp_path / "log.csv")

    real_replace = os.replace

    def crash(src, dst):
        if str(dst) == str(photo):
            raise KeyboardInterrupt  # the process dies between the logged intent and the rename
        real_replace(src, dst)  # the backup in the log folder lands as usual

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_fix(photo, FIX, method="exif", log=log)
    monkeypatch.undo()
    assert _sha(photo) == before
    assert not list(tmp_path.glob("*" + atomic.TMP_SUFFIX))  # the temp file was cleaned up
    assert len(read_log(log.path)) == 1  # the intent was logged first
    assert [r.status for r in undo(log.path)] == ["already-original"]
    assert write_fix(photo, FIX, method="exif", log=log).status == "written"  # a rerun finishes it
    assert [r.status for r in undo(log.path)] == ["restored", "already-original"]
    assert _sha(photo) == before


def test_undo_refuses_a_file_changed_since(tmp_path):
    photo = _photo(tmp_path)
    log = ChangeLog(tmp_path / "log.csv")
    write_fix(photo, FIX, method="exif", log=log)
    photo.write_bytes(photo.read_bytes() + b"edited elsewhere")
    changed = _sha(photo)
    res = undo(log.path)
    assert res[0].status == "failed" and "changed since" in res[0].message
    assert _sha(photo) == changed


def test_symlink_is_followed_not_replaced(tmp_path):
    photo = _photo(tmp_path)
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    assert write_fix(link, FIX, method="exif", log=ChangeLog(tmp_path / "l.csv")).status == "written"
    assert link.is_symlink() and read_exif_gps(photo.read_bytes()) is not None


def test_new_sidecar_and_undo_removes_it(tmp_path):
    png = _png(tmp_path)
    before = _sha(png)
    assert write_method(png) == "sidecar" and write_method(_photo(tmp_path)) == "exif"
    log = ChangeLog(tmp_path / "log.csv")
    out = write_fix(png, FIX, method="sidecar", log=log)
    sc = sidecar_path(png)
    assert out.status == "written" and sc.name == "b.png.xmp" and _sha(png) == before
    back = read_sidecar_gps(sc)
    assert back["lat"] == pytest.approx(FIX.lat, abs=1e-9) and back["radius_m"] == 2500
    assert back["method"] == "geospot test"
    assert existing_gps(png) == "sidecar b.png.xmp"
    assert [r.status for r in undo(log.path)] == ["restored"] and not sc.exists()


DARKTABLE_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
   xmp:Rating="3"
   darktable:xmp_version="5"
   {gps}>
   <darktable:history><rdf:Seq/></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_existing_sidecar_is_extended_and_restored(tmp_path):
    png = _png(tmp_path)
    sc = sidecar_path(png)
    sc.write_text(DARKTABLE_XMP.format(gps=""), encoding="utf-8")
    before = _sha(sc)
    log = ChangeLog(tmp_path / "log.csv")
    assert write_fix(png, FIX, method="sidecar", log=log).status == "written"
    text = sc.read_text(encoding="utf-8")
    assert 'xmp:Rating="3"' in text and "darktable:history" in text
    assert read_sidecar_gps(sc)["lat"] == pytest.approx(FIX.lat, abs=1e-9)
    assert read_log(log.path)[0]["action"] == "sidecar-edit"
    undo(log.path)
    assert _sha(sc) == before


def test_sidecar_with_gps_needs_overwrite_then_is_replaced(tmp_path):
    png = _png(tmp_path)
    sc = sidecar_path(png)
    sc.write_text(DARKTABLE_XMP.format(gps='exif:GPSLatitude="10,30.0N" exif:GPSLongitude="20,0.0E"'),
                  encoding="utf-8")
    log = ChangeLog(tmp_path / "log.csv")
    assert write_fix(png, FIX, method="sidecar", log=log).status == "has-gps"
    assert write_fix(png, FIX, method="sidecar", log=log, overwrite=True).status == "written"
    assert read_sidecar_gps(sc)["lat"] == pytest.approx(FIX.lat, abs=1e-9)
    assert 'xmp:Rating="3"' in sc.read_text(encoding="utf-8")


def test_broken_sidecar_is_reported_not_touched(tmp_path):
    png = _png(tmp_path)
    sc = sidecar_path(png)
    sc.write_text("<not xml", encoding="utf-8")
    out = write_fix(png, FIX, method="sidecar", log=ChangeLog(tmp_path / "log.csv"))
    assert out.status == "failed" and "not valid XML" in out.message
    assert sc.read_text(encoding="utf-8") == "<not xml"


def test_broken_jpeg_fails_with_one_reason(tmp_path):
    p = tmp_path / "cut.jpg"
    p.write_bytes(jpeg_bytes(None)[:200])
    out = write_fix(p, FIX, method="exif", log=ChangeLog(tmp_path / "log.csv"))
    assert out.status == "failed" and out.message
    assert not (tmp_path / "log.csv").exists()


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed (libimage-exiftool-perl)")
def test_exiftool_reads_sidecar(tmp_path):
    png = _png(tmp_path)
    write_fix(png, GpsFix(-12.5, -77.25, 900.0, "geospot m"), method="sidecar", log=ChangeLog(tmp_path / "l.csv"))
    out = subprocess.run(["exiftool", "-n", "-csv", "-GPSLatitude", "-GPSLongitude", "-GPSHPositioningError",
                          "-GPSProcessingMethod", str(sidecar_path(png))], capture_output=True, text=True, check=True)
    row = next(csv.DictReader(io.StringIO(out.stdout)))
    assert float(row["GPSLatitude"]) == pytest.approx(-12.5, abs=1e-9)
    assert float(row["GPSLongitude"]) == pytest.approx(-77.25, abs=1e-9)
    assert row["GPSHPositioningError"] == "900" and row["GPSProcessingMethod"] == "geospot m"


def test_raw_gets_a_sidecar_and_non_photos_get_none(tmp_path):
    raw = tmp_path / "IMG_0001.CR2"
    raw.write_bytes(b"II*\x00" + b"\x00" * 64)  # TIFF-based RAW: never edited
    log = ChangeLog(tmp_path / "log.csv")
    assert write_method(raw) == "sidecar"
    assert write_fix(raw, FIX, method="sidecar", log=log).status == "written"
    assert (tmp_path / "IMG_0001.CR2.xmp").is_file()
    assert write_fix(raw, FIX, method="sidecar", log=log, sidecar_style="stem").status == "has-gps"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    out = write_fix(notes, FIX, method="sidecar", log=log)
    assert out.status == "failed" and "not a photo" in out.message and not (tmp_path / "notes.txt.xmp").exists()
