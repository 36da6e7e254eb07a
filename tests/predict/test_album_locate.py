"""`geospot train --album-model`, `geospot locate --album` and `geotag --album-by` with the album model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geospot.cli import main
from geospot.testing import make_fixture_dataset


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    data = make_fixture_dataset(tmp_path_factory.mktemp("fx"), n_locations=20, views=2, size=48, seed=3,
                                regions=[(45.0, 10.0, 150.0), (-30.0, 140.0, 150.0)])
    root = tmp_path_factory.mktemp("models")
    with_album = root / "with_album"
    assert main(["train", str(data), "--out", str(with_album), "--encoder", "tiny", "--epochs", "2", "--quiet",
                 "--no-calibrate", "--min-per-cell", "2", "--max-per-cell", "6", "--album-model",
                 "--album-epochs", "2"]) == 0
    assert (with_album / "album.json").is_file() and (with_album / "album.safetensors").is_file()
    plain = root / "plain"
    shutil.copytree(with_album, plain)
    (plain / "album.json").unlink()
    (plain / "album.safetensors").unlink()
    # an album: three photos with capture times, in a folder of their own
    album = root / "trip"
    album.mkdir()
    photos = sorted((Path(data).parent / "images").rglob("*.jpg"))[:3]
    for i, src in enumerate(photos):
        exif = Image.Exif()
        exif[0x0132] = f"2021:06:01 1{2 - i}:00:00"  # DateTime; the last photo was taken first
        Image.open(src).save(album / f"p{i}.jpg", exif=exif)
    return with_album, plain, album


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_locate_album_answers_every_photo_with_the_album_model(models, capsys):
    with_album, _, album = models
    code, out, err = _run(capsys, ["locate", "--album", "--album-method", "model", str(album), "--model",
                                   str(with_album), "--json"])
    assert code == 0, err
    answers = json.loads(out)
    assert [Path(a["path"]).name for a in answers] == ["p0.jpg", "p1.jpg", "p2.jpg"]  # input order
    assert all(a["album_method"] == "model" and len(a["paths"]) == 1 for a in answers)
    assert "album of 3 photo(s), answered with the album model" in err


def test_average_gives_one_answer_and_an_album_of_one_is_the_single_answer(models, capsys):
    _, plain, album = models
    code, out, err = _run(capsys, ["locate", "--album", "--album-method", "average", str(album), "--model",
                                   str(plain), "--json"])
    assert code == 0 and "averaged" in err
    answers = json.loads(out)
    assert len({(a["lat"], a["lon"]) for a in answers}) == 1
    photo = str(album / "p1.jpg")
    code, out, _ = _run(capsys, ["locate", "--album", "--album-method", "average", photo, "--model", str(plain),
                                 "--json"])
    assert code == 0
    (alone,) = json.loads(out)
    code, out, _ = _run(capsys, ["locate", photo, "--model", str(plain), "--json"])
    (single,) = json.loads(out)
    for key in ("lat", "lon", "top_cells", "radius_km"):
        assert alone[key] == single[key]


def test_fuse_is_same_place_fusion_for_every_photo(models, capsys):
    with_album, _, album = models
    code, out, err = _run(capsys, ["locate", "--album", str(album), "--model", str(with_album), "--json"])
    assert code == 0 and "the album model" in err  # auto: the album model when there is one
    _, plain, _ = models
    code, out, err = _run(capsys, ["locate", "--album", str(album), "--model", str(plain), "--json"])
    assert code == 0 and "mean embedding" in err  # auto: else fuse
    answers = json.loads(out)
    code, out, _ = _run(capsys, ["locate", "--same-place", str(album), "--model", str(with_album), "--json"])
    (fused,) = json.loads(out)
    assert len(answers) == 3 and all((a["lat"], a["lon"]) == (fused["lat"], fused["lon"]) for a in answers)


def test_album_options_fail_with_one_line(models, capsys):
    with_album, plain, album = models
    code, _, err = _run(capsys, ["locate", "--album", "--same-place", str(album), "--model", str(with_album)])
    assert code == 2 and err.count("\n") == 1 and "--same-place" in err
    code, _, err = _run(capsys, ["locate", "--album", "--album-method", "model", str(album), "--model", str(plain)])
    assert code == 2 and "has no album model" in err and err.count("\n") == 1
    code, _, err = _run(capsys, ["locate", "--album-method", "average", str(album), "--model", str(plain)])
    assert code == 2 and "--album only" in err
    good = (with_album / "album.json").read_text()
    (with_album / "album.json").write_text("{not json")
    try:
        code, _, err = _run(capsys, ["locate", "--album", "--album-method", "model", str(album), "--model",
                                     str(with_album)])
        assert code == 2 and "album.json" in err and err.count("\n") == 1
    finally:
        (with_album / "album.json").write_text(good)
    # a photo that cannot be decoded is reported; the rest of the album is answered
    bad = album.parent / "trip_bad"
    shutil.copytree(album, bad)
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    code, out, err = _run(capsys, ["locate", "--album", "--album-method", "average", str(bad), "--model",
                                   str(plain), "--json"])
    assert code == 1 and "1 of 4 inputs failed" in err
    assert sum("error" in a for a in json.loads(out)) == 1


def test_album_times_set_the_order():
    from geospot.albums import album_order, capture_hours

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, stamp in enumerate(["2021:06:01 12:30:00", None, "2021:06:01 10:00:00"]):
            img = Image.new("RGB", (16, 16))
            exif = Image.Exif()
            if stamp:
                exif[0x0132] = stamp
            p = Path(d) / f"{i}.jpg"
            img.save(p, exif=exif)
            paths.append(str(p))
        hours = capture_hours(paths)
    assert hours[2] == 0 and hours[0] == pytest.approx(2.5) and np.isnan(hours[1])
    assert list(album_order(hours)) == [2, 0, 1]


def test_geotag_album_by_uses_the_album_model(models, tmp_path, capsys):
    import csv

    from geospot.albums import geotag_album
    from geospot.predict import Predictor

    with_album, plain, album = models
    paths = sorted(str(p) for p in album.glob("*.jpg"))
    per_photo = geotag_album(Predictor.load(with_album), paths, "model")
    assert [r.path for r in per_photo] == paths  # one answer per photo
    (fused,) = geotag_album(Predictor.load(with_album), paths, "fuse")  # one fused answer
    assert fused.paths == paths
    assert [r.path for r in geotag_album(Predictor.load(with_album), paths, "auto")] == paths
    assert len(geotag_album(Predictor.load(plain), paths, "auto")) == 1
    with pytest.raises(SystemExit, match="has no album model"):
        geotag_album(Predictor.load(plain), paths, "model")
    code, _, err = _run(capsys, ["geotag", str(album), "--model", str(with_album), "--album-by", "folder",
                                 "--dry-run", "--report", str(tmp_path / "rep"), "--log", str(tmp_path / "log.csv")])
    assert code == 0, err
    with open(tmp_path / "rep" / "proposals.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {r["group"] for r in rows} == {str(album)}
    assert len({(r["lat"], r["lon"]) for r in rows}) >= 1


_LOCATE = """
import json, sys
sys.modules["torch"] = None  # as if torch were not installed
from geospot.cli import main
code = main({argv!r})
print(json.dumps({{"code": code, "torch": sys.modules.get("torch") is not None}}), file=sys.stderr)
"""


def test_locate_album_runs_without_torch(models):
    import os
    import subprocess
    import sys

    from geospot.encoders.runtime import EncoderRuntime

    with_album, _, album = models
    EncoderRuntime("tiny", backend="onnx")  # the ONNX export exists (made once, with torch)
    src = str(Path(__file__).resolve().parents[2] / "src")
    argv = ["locate", "--album", "--album-method", "model", str(album), "--model", str(with_album), "--json"]
    proc = subprocess.run([sys.executable, "-c", _LOCATE.format(argv=argv)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=src), timeout=300)
    info = json.loads(proc.stderr.strip().splitlines()[-1])
    assert info == {"code": 0, "torch": False}, proc.stderr
    assert [a["album_method"] for a in json.loads(proc.stdout)] == ["model"] * 3
