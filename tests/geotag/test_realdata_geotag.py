"""The real camera corpus (skips without ../shared/data): every file gets a verified write or a named
reason; pixels and every other tag unchanged; exiftool agrees; undo restores every byte. Works on copies."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geospot.cli import main
from geospot.geotag.fix import GpsFix
from geospot.geotag.jpeg import exif_segment, read_exif_gps, segments
from geospot.geotag.xmp import read_sidecar_gps

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _decoded(data: bytes):
    try:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (img.width // 4, img.height // 4))  # DCT-scaled: every coefficient is still decoded
        return np.asarray(img.convert("RGB"))
    except Exception as exc:  # some corpus files are broken on purpose: they must stay equally broken
        return type(exc).__name__


def _tags(data: bytes):
    try:
        ex = Image.open(io.BytesIO(data)).getexif()
        # sorted: Pillow's key order is not the file's; repr: a 0/0 rational is NaN, and NaN != NaN
        return repr((sorted((k, v) for k, v in ex.items() if k != 0x8825), sorted(ex.get_ifd(0x8769).items())))
    except Exception as exc:
        return type(exc).__name__


def _pil_gps(path: Path):
    from geospot.data.images import ImageError, read_gps_exif

    try:
        return read_gps_exif(path)
    except ImageError:
        return None


def _non_exif_bytes(data: bytes) -> bytes:
    ex = exif_segment(data)
    return data if ex is None else data[:ex.start] + data[ex.end:]


@pytest.fixture()
def corpus(shared_data, tmp_path) -> Path:
    lib = tmp_path / "photo-formats"
    shutil.copytree(shared_data / "photo-formats", lib)
    for p in lib.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the shared copy is read-only
    return lib


def _reviewed(lib: Path, out: Path, files: list[Path]) -> dict[str, GpsFix]:
    fixes = {}
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "decision", "lat", "lon", "radius90_km"])
        for i, f in enumerate(files):
            lat, lon = -80 + (i * 7.31) % 160, -179.5 + (i * 13.7) % 359
            fixes[str(f)] = GpsFix(lat, lon, 1000.0 * (i + 1))
            w.writerow([str(f), "write", lat, lon, i + 1])
    return fixes


def test_geotag_whole_corpus_verified_and_undone(corpus, tmp_path, capsys):
    original = _hashes(corpus)
    before = {p: p.read_bytes() for p in corpus.rglob("*") if p.is_file()}
    files = sorted(before)
    had_gps = {f for f in files if f.name != "README" and _pil_gps(f)}
    fixes = _reviewed(corpus, tmp_path / "reviewed.csv", files)
    log = tmp_path / "log.csv"
    code = main(["geotag", "--apply", str(tmp_path / "reviewed.csv"), "--log", str(log)])
    out, err = capsys.readouterr()
    lines = out.splitlines() + err.splitlines()
    outcome = {}
    for f in files:  # exactly one line per file: a write, a skip or a named error
        mine = [ln for ln in lines if f" {f}  " in ln or f" {f}: " in ln or ln.startswith(f"error: {f}: ")]
        assert len(mine) == 1, (f, mine)
        outcome[f] = mine[0].split()[0]
    readmes = {f for f in files if f.name == "README"}
    assert {f for f, o in outcome.items() if o == "error:"} == readmes  # only the non-photos fail
    assert code == 1
    skipped = {f for f, o in outcome.items() if o == "skip"}
    # exactly the photos Pillow (the import path) finds a position in: 9 Arezzo photos, 3 HEICs, 6 others
    # (one phone writes SRATIONAL coordinates: a reader that only knew RATIONAL overwrote it)
    assert skipped == had_gps and len(skipped) == 18
    assert all(original[str(f.relative_to(corpus))] == hashlib.sha256(f.read_bytes()).hexdigest() for f in skipped)
    written = {f for f, o in outcome.items() if o == "written"}
    assert len(written) == len(files) - len(readmes) - len(skipped)
    sidecars = []
    for f in written:
        new = f.read_bytes()
        fix = fixes[str(f)]
        if new == before[f]:  # untouched photo: its sidecar holds the position
            sc = f.with_name(f.name + ".xmp")
            back = read_sidecar_gps(sc)
            assert back["lat"] == pytest.approx(fix.lat, abs=1e-9) and back["lon"] == pytest.approx(fix.lon, abs=1e-9)
            sidecars.append(sc)
            continue
        assert f.suffix.lower() in (".jpg", ".jpeg")
        back = read_exif_gps(new)
        assert (back["lat"], back["lon"]) == (fix.lat, fix.lon)
        assert _non_exif_bytes(new) == _non_exif_bytes(before[f])  # pixel data and every other segment
        segments(new)
        dec_old, dec_new = _decoded(before[f]), _decoded(new)
        assert (isinstance(dec_old, str) and dec_old == dec_new) or np.array_equal(dec_old, dec_new), f
        assert _tags(before[f]) == _tags(new), f
    assert {s.name for s in sidecars} == {f.name + ".xmp" for f in written if f.suffix.lower() not in (".jpg", ".jpeg")}
    assert len(sidecars) == 7 + 2  # the TIFFs and the HEICs without GPS
    if shutil.which("exiftool"):
        targets = [str(f) for f in written if f.read_bytes() != before[f]] + [str(s) for s in sidecars]
        res = subprocess.run(["exiftool", "-j", "-n", "-Composite:GPSLatitude", "-Composite:GPSLongitude",
                              "-XMP:GPSLatitude", "-XMP:GPSLongitude", *targets], capture_output=True, text=True)
        got = {r["SourceFile"]: r for r in json.loads(res.stdout)}
        assert len(got) == len(targets)
        for t, r in got.items():
            fix = fixes[t[:-4] if t.endswith(".xmp") else t]
            assert r["GPSLatitude"] == pytest.approx(fix.lat, abs=1e-6), t
            assert r["GPSLongitude"] == pytest.approx(fix.lon, abs=1e-6), t
    assert main(["geotag", "--undo", str(log)]) == 0
    assert _hashes(corpus) == original


def test_overwrite_real_camera_gps_and_undo(corpus, tmp_path, capsys):
    gps = sorted((corpus / "jpg" / "gps").glob("*.jpg"))
    original = _hashes(corpus)
    fixes = _reviewed(corpus, tmp_path / "r.csv", gps)
    log = tmp_path / "log.csv"
    assert main(["geotag", "--apply", str(tmp_path / "r.csv"), "--log", str(log), "--overwrite"]) == 0
    for f in gps:
        back = read_exif_gps(f.read_bytes())
        assert (back["lat"], back["lon"]) == (fixes[str(f)].lat, fixes[str(f)].lon)
        gps_ifd = Image.open(f).getexif().get_ifd(0x8825)
        assert 7 in gps_ifd and 8 in gps_ifd  # the camera's time stamp and satellites are kept
    capsys.readouterr()
    assert main(["geotag", "--undo", str(log)]) == 0
    assert _hashes(corpus) == original
