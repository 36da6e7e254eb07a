"""`geospot geotag` end to end: dry run + report, apply the reviewed CSV, undo, with the tiny model."""
from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from geospot.cli import main
from geospot.geotag.fix import GpsFix
from geospot.geotag.jpeg import read_exif_gps
from geospot.geotag.xmp import read_sidecar_gps

from .exif_fixtures import build_tiff, jpeg_bytes


def _library(root: Path) -> Path:
    lib = root / "lib"
    (lib / "trip").mkdir(parents=True)
    for i in range(3):
        (lib / "trip" / f"{i}.jpg").write_bytes(jpeg_bytes(build_tiff("<" if i % 2 else ">"), size=(48, 40), seed=i))
    gps = {"lat": (43, 27, 3000, 100), "ref": "N", "alt": 2.0, "lon": (11, 52, 4500, 100)}
    (lib / "has_gps.jpg").write_bytes(jpeg_bytes(build_tiff("<", gps=gps), seed=9))
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(lib / "scan.png")
    return lib


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_review_apply_undo(tiny_model_dir, tmp_path, capsys):
    lib = _library(tmp_path)
    (lib / "broken.jpg").write_text("not a photo")
    original = _hashes(lib)
    rep, log = tmp_path / "review", tmp_path / "geotag-log.csv"
    code = main(["geotag", str(lib), "--model", str(tiny_model_dir), "--dry-run", "--report", str(rep),
                 "--max-radius-km", "40000"])
    out, err = capsys.readouterr()
    assert code == 1  # the broken file
    assert _hashes(lib) == original and not log.exists()
    assert "would write" in out and "has_gps.jpg: already has GPS (EXIF)" in out
    assert err.count("broken.jpg") == 1
    assert "4 would be written, 1 already had GPS, 1 failed" in err
    rows = list(csv.DictReader(open(rep / "proposals.csv", encoding="utf-8")))
    assert {Path(r["path"]).name: r["decision"] for r in rows} == {
        "0.jpg": "write", "1.jpg": "write", "2.jpg": "write", "has_gps.jpg": "skip", "scan.png": "write",
        "broken.jpg": "skip"}
    # the user rejects one and moves another across the antimeridian
    for r in rows:
        if r["path"].endswith("1.jpg"):
            r["decision"] = "skip"
        if r["path"].endswith("2.jpg"):
            r["lat"], r["lon"] = "-16.5", "-179.99"
    with open(rep / "proposals.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    assert main(["geotag", "--apply", str(rep / "proposals.csv"), "--log", str(log)]) == 0
    out, err = capsys.readouterr()
    assert "3 written" in err and f"--undo {log}" in err
    back = read_exif_gps((lib / "trip" / "2.jpg").read_bytes())
    assert (back["lat"], back["lon"]) == (GpsFix(-16.5, -179.99).lat, GpsFix(-16.5, -179.99).lon)
    assert "reviewed estimate" in back["method"]
    assert read_exif_gps((lib / "trip" / "1.jpg").read_bytes()) is None
    assert read_sidecar_gps(lib / "scan.png.xmp") is not None
    changed = {k for k, v in _hashes(lib).items() if original.get(k) != v}
    assert changed == {"trip/0.jpg", "trip/2.jpg", "scan.png.xmp"}
    assert main(["geotag", "--undo", str(log)]) == 0
    assert _hashes(lib) == original


def test_run_with_gate_writes_only_confident(tiny_model_dir, tmp_path, capsys):
    lib = _library(tmp_path)
    original = _hashes(lib)
    log = tmp_path / "log.csv"
    args = ["geotag", str(lib), "--model", str(tiny_model_dir), "--log", str(log)]
    assert main(args + ["--max-radius-km", "0.001"]) == 0  # nothing is that confident
    err = capsys.readouterr().err
    assert "0 written" in err and "4 below the confidence gate" in err and _hashes(lib) == original
    assert main(args + ["--max-radius-km", "40000", "--album-by", "folder"]) == 0
    capsys.readouterr()
    pos = [read_exif_gps((lib / "trip" / f"{i}.jpg").read_bytes()) for i in range(3)]
    assert all(p is not None for p in pos) and len({(p["lat"], p["lon"]) for p in pos}) == 1  # one album
    st = (lib / "trip" / "0.jpg").stat()
    # rerun: everything is done, the model is not needed again
    assert main(args + ["--max-radius-km", "40000"]) == 0
    assert "0 written" in capsys.readouterr().err
    assert (lib / "trip" / "0.jpg").stat().st_mtime_ns == st.st_mtime_ns
    assert main(["geotag", "--undo", str(log)]) == 0
    assert _hashes(lib) == original


def test_bad_options_and_logs_get_one_line(tmp_path, capsys):
    import pytest

    def one_line(argv, needle=""):
        assert main(argv) == 2  # usage or setup error (docs/errors.md)
        err = capsys.readouterr().err.strip()
        assert "error: " in err and "\n" not in err and needle in err, err

    one_line(["geotag", "--undo", str(tmp_path / "nope.csv")], "no such log")
    bogus = tmp_path / "bogus.csv"
    bogus.write_text("a,b\n1,2\n")
    one_line(["geotag", "--undo", str(bogus)], "not a geospot geotag log")
    one_line(["geotag"], "give photos")
    with pytest.raises(SystemExit) as info:  # argparse's own usage error
        main(["geotag", "x", "--same-place", "--album-by", "folder"])
    assert info.value.code == 2
    shutil.rmtree(tmp_path, ignore_errors=True)
