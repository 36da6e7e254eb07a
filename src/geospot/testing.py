"""Generated fixtures for geospot's tests, examples and benchmarks (no real data needed).

- `make_fixture_dataset`: a small, deterministic, *learnable* geolocation dataset:
  locations clustered in real-world regions, several views each, and images whose
  colours and textures depend on where they were "taken", so that even a
  random-weights encoder with a linear head beats the medoid baseline.
- `make_bad_files`: one file per awkward or broken input that image decoding must
  survive (zero-byte, truncated, not-an-image, CMYK, 16-bit, alpha, EXIF rotation,
  decompression-bomb header, ...).
"""
from __future__ import annotations

import colorsys
import csv
import math
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_REGIONS",
    "UNREADABLE_BAD_FILES",
    "make_bad_files",
    "make_fixture_dataset",
]

_EARTH_RADIUS_KM = 6371.0088

# (lat_deg, lon_deg, spread_km): five well-separated clusters on five continents.
DEFAULT_REGIONS: dict[str, tuple[float, float, float]] = {
    "europe": (48.5, 10.0, 700.0),
    "north_america": (39.5, -98.0, 1200.0),
    "south_america": (-15.0, -55.0, 1000.0),
    "africa": (2.0, 22.0, 1000.0),
    "australia": (-25.0, 134.0, 900.0),
}

# Names from `make_bad_files` that `open_image` must reject (the others are odd but valid).
UNREADABLE_BAD_FILES = frozenset({"zero_byte", "truncated_jpeg", "text_as_jpg", "bomb_png", "big_header_png"})


def _destination(lat_deg: float, lon_deg: float, bearing_rad: float, dist_km: float) -> tuple[float, float]:
    """Point reached from (lat, lon) after `dist_km` along `bearing` on the sphere."""
    lat1, lon1 = math.radians(lat_deg), math.radians(lon_deg)
    ang = dist_km / _EARTH_RADIUS_KM
    sin_lat2 = math.sin(lat1) * math.cos(ang) + math.cos(lat1) * math.sin(ang) * math.cos(bearing_rad)
    lat2 = math.asin(max(-1.0, min(1.0, sin_lat2)))
    lon2 = lon1 + math.atan2(
        math.sin(bearing_rad) * math.sin(ang) * math.cos(lat1), math.cos(ang) - math.sin(lat1) * sin_lat2
    )
    lon2_deg = (math.degrees(lon2) + 180.0) % 360.0 - 180.0
    return math.degrees(lat2), lon2_deg


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))) * 255.0


def _render(size: int, region: int, n_regions: int, dx: float, dy: float, view: int, views: int,
            rng: np.random.Generator) -> np.ndarray:
    """One synthetic street view: sky over textured ground.

    Region -> hues and stripe texture (coarse, easy signal); position inside the
    region (dx, dy in [-1, 1]) -> smooth colour/horizon shifts (fine signal);
    view -> horizontal shift of the scene and lighting; plus pixel noise.
    """
    hue = region / n_regions
    sky = _hsv(hue, 0.35 + 0.15 * dy, 0.85 + 0.1 * dx)
    ground = _hsv(hue + 0.45 + 0.04 * dx, 0.65, 0.55 + 0.15 * dy)
    angle = math.pi * region / n_regions
    freq = 2.0 + 1.5 * (region % 3)
    phase = 2 * math.pi * view / max(views, 1)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    horizon = 0.45 + 0.08 * dy + 0.05 * math.sin(phase)
    stripes = 0.75 + 0.25 * np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    gradient = 1.0 - 0.3 * yy  # sky brighter at the top
    img = np.where((yy < horizon)[..., None], sky * gradient[..., None], ground * stripes[..., None])
    # a region-coloured "building" whose position depends on the view
    bx = int(size * ((0.2 + 0.6 * view / max(views, 1) + 0.1 * dx) % 1.0))
    bw, bh = max(size // 8, 2), max(int(size * (0.2 + 0.1 * (dy + 1))), 2)
    top = max(int(size * horizon) - bh, 0)
    img[top:int(size * horizon), bx:bx + bw] = _hsv(hue + 0.2, 0.5, 0.7)
    light = 1.0 + 0.08 * math.cos(phase)
    img = img * light + rng.normal(0.0, 8.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_fixture_dataset(
    root: str | Path,
    n_locations: int = 60,
    views: int = 4,
    size: int = 64,
    seed: int = 0,
    regions: list[tuple[float, float, float]] | None = None,
) -> Path:
    """Write a small learnable dataset under `root` and return the path of its manifest.csv.

    Locations are spread over `regions` (default: `DEFAULT_REGIONS`, five
    continents; or a list of `(lat_deg, lon_deg, spread_km)`), assigned round-robin
    so every region gets locations. Each location has `views` JPEGs of
    `size` x `size` pixels under `images/<location_id>/<view>.jpg`. The manifest
    columns are `path,lat,lon,location_id,view,split` with about 20% of each
    region's locations in `split=test`. Output is identical for identical arguments.
    """
    if n_locations < 1 or views < 1:
        raise ValueError(f"n_locations and views must be >= 1, got {n_locations} and {views}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    region_list = list(DEFAULT_REGIONS.values()) if regions is None else [tuple(map(float, r)) for r in regions]
    if not region_list:
        raise ValueError("regions must not be empty")
    for lat, lon, spread in region_list:
        if not (-90 <= lat <= 90 and -180 <= lon <= 180 and spread >= 0):
            raise ValueError(f"bad region (lat_deg, lon_deg, spread_km): {(lat, lon, spread)}")

    root = Path(root)
    rng = np.random.default_rng(seed)
    n_regions = len(region_list)
    region_of = np.arange(n_locations) % n_regions
    rng.shuffle(region_of)

    # ~20% of each region's locations are test (at least one when the region has two or more)
    is_test = np.zeros(n_locations, dtype=bool)
    for r in range(n_regions):
        members = np.flatnonzero(region_of == r)
        n_test = int(round(0.2 * len(members))) if len(members) >= 5 else int(len(members) >= 2)
        is_test[rng.permutation(members)[:n_test]] = True

    rows = []
    for i in range(n_locations):
        lat0, lon0, spread_km = region_list[region_of[i]]
        bearing = rng.uniform(0.0, 2 * math.pi)
        frac = math.sqrt(rng.uniform(0.0, 1.0))  # uniform over the disc
        lat, lon = _destination(lat0, lon0, bearing, frac * spread_km)
        lat, lon = round(lat, 6), round(lon, 6)
        dx, dy = frac * math.sin(bearing), frac * math.cos(bearing)
        loc_id = f"loc{i:04d}"
        (root / "images" / loc_id).mkdir(parents=True, exist_ok=True)
        for v in range(views):
            pixels = _render(size, int(region_of[i]), n_regions, dx, dy, v, views, rng)
            rel = f"images/{loc_id}/{v}.jpg"
            Image.fromarray(pixels, "RGB").save(root / rel, quality=90)
            rows.append((rel, f"{lat:.6f}", f"{lon:.6f}", loc_id, v, "test" if is_test[i] else "train"))

    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "lat", "lon", "location_id", "view", "split"])
        writer.writerows(rows)
    return manifest


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height RGB pixels (data far too short)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def make_bad_files(directory: str | Path) -> dict[str, Path]:
    """Write one file per awkward or broken image input; return {name: path}.

    Must fail to decode (see `UNREADABLE_BAD_FILES`): `zero_byte`, `truncated_jpeg`,
    `text_as_jpg`, `bomb_png` (header declares 100000 x 100000 pixels),
    `big_header_png` (declares 6000 x 6000 = 36 MP, under Pillow's bomb limits, with
    almost no data: only a `max_pixels` check before decoding rejects it as too big).

    Odd but valid (must decode to RGB): `cmyk_jpeg` (pure red), `palette_transparent_png`
    (left half transparent, right half green), `png_16bit` (horizontal ramp 0..65535),
    `rgba_png` (left half transparent, right half opaque blue), `la_png`,
    `grayscale_jpeg`, `bilevel_png`, `float_tiff` (mode F ramp 0..1),
    `exif_rotated_jpeg` (stored 48 x 32 with a red top-left block and EXIF orientation 6,
    i.e. displayed 32 x 48 with the block top-right), `corrupt_exif_jpeg` (garbage EXIF).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    rng = np.random.default_rng(0)

    def path(name: str, filename: str) -> Path:
        out[name] = d / filename
        return out[name]

    path("zero_byte", "zero_byte.jpg").write_bytes(b"")

    noisy = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), "RGB")
    noisy.save(d / "_full.jpg", quality=95)
    data = (d / "_full.jpg").read_bytes()
    (d / "_full.jpg").unlink()
    path("truncated_jpeg", "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])

    path("text_as_jpg", "text.jpg").write_text("this is not an image, just text\n", encoding="utf-8")
    path("bomb_png", "bomb.png").write_bytes(_png_with_header(100_000, 100_000))
    path("big_header_png", "big_header.png").write_bytes(_png_with_header(6000, 6000))

    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path("cmyk_jpeg", "cmyk.jpg"), quality=95)

    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    pal.paste(1, (16, 0, 32, 32))
    pal.save(path("palette_transparent_png", "palette_transparent.png"), transparency=0)

    ramp16 = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))
    Image.fromarray(ramp16).save(path("png_16bit", "gray16.png"))

    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, 16:] = (0, 0, 255, 255)
    Image.fromarray(rgba, "RGBA").save(path("rgba_png", "rgba.png"))

    la = np.zeros((32, 32, 2), dtype=np.uint8)
    la[:, 16:] = (40, 255)
    Image.fromarray(la).save(path("la_png", "la.png"))

    gray = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    Image.fromarray(gray, "L").save(path("grayscale_jpeg", "gray.jpg"), quality=95)
    Image.fromarray(gray > 127).save(path("bilevel_png", "bilevel.png"))

    ramp_f = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (32, 1))
    Image.fromarray(ramp_f).save(path("float_tiff", "float.tiff"))

    rot = np.full((32, 48, 3), 255, dtype=np.uint8)  # stored landscape: 48 wide, 32 high
    rot[:12, :12] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rot, "RGB").save(path("exif_rotated_jpeg", "exif_rotated.jpg"), quality=95, exif=exif)

    good = Image.fromarray(np.full((24, 24, 3), 120, dtype=np.uint8), "RGB")
    good.save(path("corrupt_exif_jpeg", "corrupt_exif.jpg"), quality=95,
              exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + bytes(rng.integers(0, 256, 40, dtype=np.uint8)))
    return out
