"""Lossless EXIF GPS writes: pixels, every other tag and every other segment stay byte-identical."""
from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from geospot.geotag.fix import GpsFix, from_xmp_coord, quantise_deg, to_xmp_coord
from geospot.geotag.jpeg import JpegError, exif_segment, gps_splice, read_exif_gps, segments
from geospot.geotag.tiffedit import TiffBlock, add_gps
from geospot.testing import make_bad_files

from .exif_fixtures import build_tiff, jpeg_bytes

FIX = GpsFix(-33.8567844, 151.2152967, radius_m=12345.0, method="geospot test, model tiny")
EXIFTOOL = shutil.which("exiftool")


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _non_gps_tags(data: bytes) -> dict:
    ex = Image.open(io.BytesIO(data)).getexif()
    return {"ifd0": {k: v for k, v in ex.items() if k != 0x8825}, "exif": dict(ex.get_ifd(0x8769)),
            "ifd1": dict(ex.get_ifd(0x0001)) if hasattr(ex, "get_ifd") else {}}


def _other_segments(data: bytes) -> list[bytes]:
    segs = segments(data)
    ex = exif_segment(data, segs)
    return [data[s.start:s.end] for s in segs if s != ex] + [data[segs[-1].end:]]


def _write(data: bytes, fix: GpsFix = FIX) -> bytes:
    return gps_splice(data, fix).apply(data)


def _check_lossless(old: bytes, new: bytes, fix: GpsFix = FIX) -> None:
    assert np.array_equal(_pixels(old), _pixels(new))
    assert _non_gps_tags(old) == _non_gps_tags(new)
    assert _other_segments(old) == _other_segments(new)  # every other segment and the pixel data, byte for byte
    back = read_exif_gps(new)
    assert (back["lat"], back["lon"]) == (fix.lat, fix.lon)
    assert back["method"] == fix.method and back["radius_m"] == round(fix.radius_m)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_existing_exif_keeps_every_byte_and_makernote_offsets(endian):
    tiff = build_tiff(endian)
    old = jpeg_bytes(tiff)
    new = _write(old)
    _check_lossless(old, new)
    new_tiff = exif_segment(new).payload(new)[6:]
    # the old block is a prefix of the new one except the 4-byte IFD0 pointer in the header
    assert new_tiff[:4] == tiff[:4] and new_tiff[8:len(tiff)] == tiff[8:]
    block = TiffBlock(new_tiff)
    assert block.e == endian and block.ifd0_offset >= len(tiff)
    # the MakerNote's internal absolute offset still finds its payload
    assert b"MAKERNOTE-SECRET-PAYLOAD" == new_tiff[tiff.index(b"MAKERNOTE-SECRET"):][:24]


def test_no_exif_inserts_app1_after_jfif_app0():
    old = jpeg_bytes(None)
    assert exif_segment(old) is None
    new = _write(old)
    segs = segments(new)
    assert [s.marker for s in segs[:3]] == [0xD8, 0xE0, 0xE1]
    assert np.array_equal(_pixels(old), _pixels(new))
    assert _other_segments(old) == _other_segments(new)
    back = read_exif_gps(new)
    assert (back["lat"], back["lon"]) == (FIX.lat, FIX.lon)
    pil = Image.open(io.BytesIO(new)).getexif().get_ifd(0x8825)
    assert pil[1] == "S" and pil[3] == "E"


def test_no_exif_with_xmp_segment():
    old = jpeg_bytes(None, xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    new = _write(old)
    assert _other_segments(old) == _other_segments(new)


def test_existing_gps_pointer_patched_in_place_and_other_gps_tags_kept():
    tiff = build_tiff(">", gps={"lat": (43, 27, 3000, 100), "ref": "N", "alt": 250.5, "lon": (11, 52, 4500, 100)})
    old = jpeg_bytes(tiff)
    assert read_exif_gps(old)["lat"] == pytest.approx(43 + 27 / 60 + 30 / 3600)
    new = _write(old)
    _check_lossless(old, new)
    new_tiff = exif_segment(new).payload(new)[6:]
    changed = [i for i in range(len(tiff)) if tiff[i] != new_tiff[i]]
    assert len(changed) <= 4 and TiffBlock(new_tiff).ifd0_offset == 8  # only the GPSInfo pointer moved
    gps = Image.open(io.BytesIO(new)).getexif().get_ifd(0x8825)
    assert gps[6] == 250.5  # the camera's altitude carried over


def test_signed_rational_gps_is_read():
    tiff = build_tiff(">", gps={"lat": (60, 8, 4814, 100), "ref": "N", "alt": 1.0, "lon": (24, 54, 2438, 100),
                                "signed": True})
    back = read_exif_gps(jpeg_bytes(tiff))
    assert back["lat"] == pytest.approx(60 + 8 / 60 + 48.14 / 3600) and back["lon"] > 24


@pytest.mark.parametrize("lat,lon", [(90.0, 180.0), (-90.0, -180.0), (0.0, -0.00001), (-0.0000001, 179.9999999),
                                     (51.4778, -0.0015)])
def test_poles_antimeridian_and_hemispheres_round_trip(lat, lon):
    fix = GpsFix(lat, lon)
    back = read_exif_gps(_write(jpeg_bytes(build_tiff("<")), fix))
    assert (back["lat"], back["lon"]) == (fix.lat, fix.lon)
    assert abs(fix.lat - lat) < 1e-7 and abs(fix.lon - lon) < 1e-7
    assert from_xmp_coord(to_xmp_coord(fix.lon, "E", "W")) == pytest.approx(fix.lon, abs=1e-9)


def test_quantisation_is_idempotent():
    for v in np.random.default_rng(0).uniform(-180, 180, 200):
        q = quantise_deg(v)
        assert quantise_deg(q) == q and abs(q - v) <= 1.4e-8


def test_app1_size_limit_refused():
    old = jpeg_bytes(build_tiff("<", pad_to=65533 - 6 - 50))
    with pytest.raises(JpegError, match="64 KB"):
        gps_splice(old, FIX)


def test_broken_inputs_refused_with_a_reason(tmp_path):
    bad = make_bad_files(tmp_path)
    with pytest.raises(JpegError, match="cannot be edited safely"):
        gps_splice(bad["corrupt_exif_jpeg"].read_bytes(), FIX)
    with pytest.raises(JpegError):
        gps_splice(bad["text_as_jpg"].read_bytes(), FIX)
    with pytest.raises(JpegError):
        gps_splice(jpeg_bytes(None)[:300], FIX)  # headers cut short


def test_repeated_overwrite_reads_back_the_last():
    data = jpeg_bytes(build_tiff("<"))
    for lat in (10.0, 20.0, -30.0):
        data = _write(data, GpsFix(lat, 5.0))
    assert read_exif_gps(data)["lat"] == -30.0


def test_add_gps_rejects_bad_offsets():
    tiff = bytearray(build_tiff("<"))
    tiff[4:8] = (10_000).to_bytes(4, "little")
    with pytest.raises(ValueError):
        add_gps(bytes(tiff), FIX)


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed (Debian: libimage-exiftool-perl)")
@pytest.mark.parametrize("case", ["le", "be_gps", "none"])
def test_exiftool_reads_what_we_wrote(tmp_path, case):
    exif = {"le": build_tiff("<"), "none": None,
            "be_gps": build_tiff(">", gps={"lat": (1, 2, 3, 1), "ref": "N", "alt": 3.0, "lon": (4, 5, 6, 1)})}[case]
    old = jpeg_bytes(exif)
    path = tmp_path / "x.jpg"
    path.write_bytes(_write(old))
    out = subprocess.run([EXIFTOOL, "-j", "-n", "-G1", "-a", "-warning", "-GPS:all", "-Composite:GPSLatitude", "-Composite:GPSLongitude", "-Make", "-MakerNotes",
                          str(path)], capture_output=True, text=True, check=True).stdout
    tags = json.loads(out)[0]
    assert tags["Composite:GPSLatitude"] == pytest.approx(FIX.lat, abs=1e-9)  # signed (ref applied)
    assert tags["Composite:GPSLongitude"] == pytest.approx(FIX.lon, abs=1e-9)
    assert tags["GPS:GPSLatitudeRef"] == "S" and tags["GPS:GPSLongitudeRef"] == "E"
    assert tags["GPS:GPSProcessingMethod"] == FIX.method
    assert tags["GPS:GPSHPositioningError"] == round(FIX.radius_m)
    assert "ExifTool:Warning" not in tags
    if exif is not None:
        assert tags["IFD0:Make"] == "GeoCam"
