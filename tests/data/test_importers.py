"""Importers: geotagged photo folders and benchmark CSVs -> manifests, nothing lost."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geospot.cli import main
from geospot.data.importers import (
    DatasetImportError,
    import_csv,
    import_exif_folder,
    parse_column_map,
    read_datetime_original,
    write_import,
)
from geospot.data.manifest import read_manifest


def _photo(path: Path, gps=None, when=None, fmt="JPEG", seed=0, size=(24, 32)) -> Path:
    """A small random photo; `gps` = (lat, lon) written as EXIF degrees/minutes/seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))
    exif = Image.Exif()
    if gps is not None:
        lat, lon = gps

        def dms(v):
            v = abs(v)
            d = int(v)
            m = int((v - d) * 60)
            return (float(d), float(m), round((v - d - m / 60) * 3600, 4))

        exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}
    if when is not None:
        exif[0x8769] = {0x9003: when}
    if fmt == "TIFF":
        img.save(path, format=fmt, exif=exif.tobytes())
    else:
        img.save(path, format=fmt, exif=exif)
    return path


@pytest.fixture
def photo_folder(tmp_path):
    root = tmp_path / "photos"
    _photo(root / "a.jpg", gps=(43.4674, 11.8851), when="2019:07:01 10:20:30")
    _photo(root / "trip" / "b.jpeg", gps=(-33.865, 151.21), seed=1)
    _photo(root / "trip" / "c.tif", gps=(1.5, -2.0), fmt="TIFF", seed=2)
    _photo(root / "nogps.jpg", seed=3)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    (root / "notes.txt").write_text("holiday notes")
    # Header and EXIF intact, pixel data cut: only a full decode notices.
    good = _photo(root / "trip" / "truncated.jpg", gps=(10.0, 20.0), seed=4, size=(256, 256)).read_bytes()
    (root / "trip" / "truncated.jpg").write_bytes(good[: int(len(good) * 0.7)])
    return root


def test_exif_folder_imports_geotagged_and_lists_the_rest(photo_folder):
    result = import_exif_folder(photo_folder, progress=False)
    by_name = {Path(r["path"]).name: r for r in result.records}
    assert set(by_name) == {"a.jpg", "b.jpeg", "c.tif"}
    assert by_name["a.jpg"]["lat"] == pytest.approx(43.4674, abs=1e-4)
    assert by_name["b.jpeg"]["lat"] == pytest.approx(-33.865, abs=1e-4)
    assert by_name["b.jpeg"]["lon"] == pytest.approx(151.21, abs=1e-4)
    assert by_name["c.tif"]["lon"] == pytest.approx(-2.0, abs=1e-4)
    assert by_name["a.jpg"]["datetime_original"] == "2019-07-01T10:20:30"
    assert by_name["b.jpeg"]["datetime_original"] == ""
    rejected = {Path(r["path"]).name: r["reason"] for r in result.rejected}
    assert set(rejected) == {"nogps.jpg", "empty.jpg", "text.jpg", "notes.txt", "truncated.jpg"}
    assert "no usable GPS" in rejected["nogps.jpg"]
    assert "empty" in rejected["empty.jpg"]
    assert "not a recognised image" in rejected["text.jpg"]
    assert "not a photo file type" in rejected["notes.txt"]
    assert "cannot be decoded" in rejected["truncated.jpg"]


def test_exif_without_verify_keeps_truncated_and_no_recursion(photo_folder):
    result = import_exif_folder(photo_folder, verify=False, progress=False)
    assert "truncated.jpg" in {Path(r["path"]).name for r in result.records}
    flat = import_exif_folder(photo_folder, recursive=False, progress=False)
    assert {Path(r["path"]).name for r in flat.records} == {"a.jpg"}


def test_heic_gps_is_read(tmp_path):
    pytest.importorskip("pillow_heif")
    import pillow_heif

    pillow_heif.register_heif_opener()
    p = _photo(tmp_path / "phone.heic", gps=(48.8584, 2.2945), when="2023:01:02 03:04:05", fmt="HEIF")
    result = import_exif_folder(tmp_path, progress=False)
    assert len(result.records) == 1 and result.records[0]["lat"] == pytest.approx(48.8584, abs=1e-4)
    assert read_datetime_original(p) == "2023-01-02T03:04:05"


def test_write_import_round_trips_through_manifest(photo_folder, tmp_path):
    result = import_exif_folder(photo_folder, progress=False)
    out = tmp_path / "out" / "manifest.csv"
    manifest, report = write_import(result, out)
    m = read_manifest(manifest)
    assert len(m) == 3 and "datetime_original" in m.df.columns
    rep = pd.read_csv(report)
    assert list(rep.columns) == ["path", "reason"] and len(rep) == 5


def _im2gps_fixture(tmp_path):
    images = tmp_path / "im2gps3k"
    for k in range(3):
        _photo(images / f"img{k}.jpg", seed=k)
    _photo(images / "nested" / "deep.jpg", seed=9)
    csv = tmp_path / "im2gps3k_places365.csv"
    csv.write_text(
        "IMG_ID,AUTHOR,LAT,LON,S3_Label\n"
        "img0.jpg,a@N00,48.85,2.35,1\n"
        "img1.jpg,b@N00,-33.9,151.2,0\n"
        "img2.jpg,c@N00,north,151.2,0\n"  # bad latitude
        "img0.jpg,a@N00,48.85,2.35,1\n"  # duplicate
        "missing.jpg,d@N00,10,10,2\n"
        "deep.jpg,e@N00,95,10,2\n"  # latitude out of range
        "deep,e@N00,40,10,2\n"  # found by stem below the folder
    )
    return csv, images


def test_im2gps_rows_imported_and_bad_rows_listed_with_line_numbers(tmp_path):
    csv, images = _im2gps_fixture(tmp_path)
    result = import_csv(csv, "im2gps", images=images)
    assert [Path(r["path"]).name for r in result.records] == ["img0.jpg", "img1.jpg", "deep.jpg"]
    assert result.records[0]["AUTHOR"] == "a@N00" and result.records[0]["S3_Label"] == "1"
    reasons = {r["row"]: r["reason"] for r in result.rejected}
    assert set(reasons) == {4, 5, 6, 7}
    assert "not numbers" in reasons[4]
    assert "duplicate of line 2" in reasons[5]
    assert "image not found" in reasons[6]
    assert "outside [-90, 90]" in reasons[7]


def test_osv5m_layout_and_extra_columns(tmp_path):
    root = tmp_path / "osv5m"
    _photo(root / "images" / "test" / "00" / "101.jpg")
    _photo(root / "images" / "test" / "00" / "102.jpg", seed=1)
    csv = root / "test.csv"
    csv.write_text("id,latitude,longitude,thumb_original_url,country,region,sub-region,city\n"
                   "101,45.81,15.98,http://x,HR,Zagreb,Grad Zagreb,Zagreb\n"
                   "102,-22.9,-43.2,http://y,BR,Rio,Rio,Rio de Janeiro\n")
    result = import_csv(csv, "osv5m")
    assert not result.rejected
    assert [Path(r["path"]).name for r in result.records] == ["101.jpg", "102.jpg"]
    assert result.records[1]["city"] == "Rio de Janeiro" and result.records[0]["sub-region"] == "Grad Zagreb"


def test_geoclip_and_mapped_csv(tmp_path):
    _photo(tmp_path / "imgs" / "x.jpg")
    (tmp_path / "g.csv").write_text("IMG_FILE,LAT,LON\nimgs/x.jpg,1.0,2.0\n")
    r = import_csv(tmp_path / "g.csv", "geoclip")
    assert len(r.records) == 1 and r.records[0]["lon"] == 2.0
    (tmp_path / "m.csv").write_text("IMG,LATITUDE,LNG,place,lat\nx.jpg,3.0,4.0,p1,junk\n")
    r = import_csv(tmp_path / "m.csv", "csv", images=tmp_path / "imgs",
                   column_map="path=IMG,lat=LATITUDE,lon=LNG,location_id=place")
    rec = r.records[0]
    assert (rec["lat"], rec["lon"], rec["location_id"], rec["lat_original"]) == (3.0, 4.0, "p1", "junk")


def test_bad_format_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(DatasetImportError, match="no image id column"):
        import_csv(tmp_path / "x.csv", "im2gps")
    with pytest.raises(DatasetImportError, match="needs a column mapping"):
        import_csv(tmp_path / "x.csv", "csv")
    with pytest.raises(DatasetImportError, match="'IMG' .*not found"):
        import_csv(tmp_path / "x.csv", "csv", column_map="path=IMG,lat=foo,lon=bar")
    with pytest.raises(DatasetImportError, match="lacks"):
        parse_column_map("path=IMG,lat=LAT")
    with pytest.raises(DatasetImportError, match="unknown format"):
        import_csv(tmp_path / "x.csv", "flickr")
    with pytest.raises(DatasetImportError, match="not a folder"):
        import_exif_folder(tmp_path / "nope")


def test_cli_import_exit_codes(tmp_path, photo_folder, capsys):
    out = tmp_path / "m.csv"
    assert main(["data", "import", "exif", str(photo_folder), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "5 files not imported" in err and "nogps.jpg: no usable GPS" in err
    assert len(pd.read_csv(out)) == 3 and len(pd.read_csv(tmp_path / "m.rejected.csv")) == 5
    csv, images = _im2gps_fixture(tmp_path)
    assert main(["data", "import", "im2gps", str(csv), "--images", str(images), "--out", str(tmp_path / "i.csv")]) == 1
    assert "row 4: latitude/longitude not numbers" in capsys.readouterr().err
    (tmp_path / "none.csv").write_text("IMG_FILE,LAT,LON\nnope.jpg,1,2\n")
    assert main(["data", "import", "geoclip", str(tmp_path / "none.csv"), "--out", str(tmp_path / "n.csv")]) == 2
    assert main(["data", "import", "csv", str(csv), "--out", str(tmp_path / "n.csv")]) == 2
    assert "needs a column mapping" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_photo_formats(shared_data):
    gps = import_exif_folder(shared_data / "photo-formats" / "jpg" / "gps", progress=False)
    assert len(gps.records) == 9
    assert all(43.4 < r["lat"] < 43.5 and 11.8 < r["lon"] < 11.9 for r in gps.records)  # Arezzo
    assert [Path(r["path"]).name for r in gps.rejected] == ["README"]
    everything = import_exif_folder(shared_data / "photo-formats", verify=False, progress=False)
    n_files = sum(1 for p in (shared_data / "photo-formats").rglob("*") if p.is_file())
    assert len(everything.records) + len(everything.rejected) == n_files
    assert len(everything.records) >= 9


@pytest.mark.realdata
def test_real_im2gps3k_coordinates(shared_data):
    result = import_csv(shared_data / "coordinates" / "im2gps3k.csv", "im2gps", check_files=False)
    assert len(result.records) == 2997 and not result.rejected
    assert result.records[0]["author"] == "78841376@N00"
    assert result.records[0]["lat"] == pytest.approx(32.325436)


def test_known_format_with_extra_mapping(tmp_path):
    root = tmp_path / "osv5m"
    _photo(root / "images" / "train" / "7.jpg")
    (root / "train.csv").write_text("id,latitude,longitude,sequence\n7,45.0,15.0,seqA\n")
    rec = import_csv(root / "train.csv", "osv5m", column_map="location_id=sequence").records[0]
    assert rec["location_id"] == "seqA" and "sequence" not in rec
    with pytest.raises(DatasetImportError, match="'drive' .*not found"):
        import_csv(root / "train.csv", "osv5m", column_map="location_id=drive")
