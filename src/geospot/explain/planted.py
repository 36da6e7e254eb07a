"""A planted shortcut: fake uploader names stamped into a corner of every photo.

On photo-sharing sites many pictures carry the photographer's name, and
photographers work in one region: the name *is* a location label. A model can
learn to read it instead of the landscape and score suspiciously well. These
helpers recreate that trap on purpose so that the audit (``geospot audit``) can
be shown to catch it:

- :func:`uploader_for` ties a fake name to a coarse region (a lat/lon grid of
  ``cell_deg`` degrees, "continent-ish" at the default 30 degrees), the way one
  uploader covers one area;
- :func:`stamp_uploader` draws the name (PIL's default font, white text on a
  dark box, sized in proportion to the image) into a corner;
- :func:`make_stamped_copy` writes stamped copies of a manifest's images and a
  manifest that points at them.

The default stamp is sized to sit inside the audit's 25 % x 25 % corner masks
and inside the centre crop of the usual resize-256/crop-224 preprocessing, so
the encoder sees it and one corner mask hides it completely.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from geospot.data.images import ImageError, open_image

__all__ = ["CORNERS", "StampResult", "make_stamped_copy", "stamp_uploader", "uploader_for", "watermark_colour"]

CORNERS = ("br", "bl", "tr", "tl")

# Short first names: a stamp must fit in a corner of a 256 px image.
_NAMES = (
    "Ana", "Bo", "Cai", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kofi", "Lea",
    "Milo", "Nia", "Oto", "Pia", "Quy", "Rui", "Sol", "Tae", "Uma", "Vik", "Wen", "Yaw", "Zoe",
)
_INITIALS = "ABCDEFGHIJKLMNOPRSTVWZ"


def _name_for_key(key: str) -> str:
    """A stable fake name for a region key (sha256, so it never depends on PYTHONHASHSEED)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return f"{_NAMES[h % len(_NAMES)]} {_INITIALS[(h // len(_NAMES)) % len(_INITIALS)]}."


def uploader_for(lat_deg, lon_deg, cell_deg: float = 30.0, cells=None) -> str | list[str]:
    """The fake uploader of a photo taken at ``(lat_deg, lon_deg)``: one name per region.

    Regions are the cells of a ``cell_deg`` x ``cell_deg`` latitude/longitude grid
    (30 degrees ~ a continent-sized area; smaller values tie names more tightly to
    places, which makes the planted shortcut stronger), or, when ``cells`` (a
    `CellTable`) is given, the cells of a model: the strongest possible cheat, the
    name then *is* the class label. Names are deterministic (different regions
    may, rarely, share a name, as real uploaders travel). Scalars give a ``str``;
    arrays give a ``list[str]``.
    """
    if not cell_deg > 0:
        raise ValueError(f"cell_deg must be positive, got {cell_deg!r}")
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    if lat.shape != lon.shape:
        raise ValueError(f"lat_deg and lon_deg shapes differ: {lat.shape} vs {lon.shape}")
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise ValueError("uploader_for: coordinates must be finite")
    if np.any(np.abs(lat) > 90) or np.any(np.abs(lon) > 180):
        raise ValueError("uploader_for: latitude must be in [-90, 90] and longitude in [-180, 180]")
    if cells is not None:
        idx = np.asarray(cells.assign(lat.reshape(-1), lon.reshape(-1), nearest=True), dtype=np.int64)
        names = [_name_for_key(f"cell:{cells.ids[i]}") for i in idx]
        return names[0] if lat.ndim == 0 else names
    row = np.floor((np.clip(lat, -90, 90 - 1e-9) + 90.0) / cell_deg).astype(np.int64)
    col = np.floor((np.clip(lon, -180, 180 - 1e-9) + 180.0) / cell_deg).astype(np.int64)
    names = [_name_for_key(f"{cell_deg:g}:{r}:{c}") for r, c in zip(row.ravel(), col.ravel())]
    return names[0] if lat.ndim == 0 else names


def _font(size_px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size_px`` (scalable when Pillow has FreeType, else the bitmap font)."""
    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, ValueError, OSError):  # old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def watermark_colour(name: str) -> tuple[int, int, int]:
    """The dark box colour of an uploader's watermark: each photographer has a house style.

    A stable dark shade (every channel <= 70: white text stays readable and the box stands out) from
    the name's sha256; different uploaders almost always get different shades.
    """
    h = hashlib.sha256(f"style:{name}".encode()).digest()
    return (h[0] % 71, h[1] % 71, h[2] % 71)


def stamp_uploader(
    img: Image.Image,
    name: str,
    corner: str = "br",
    text_frac: float = 0.05,
    margin_frac: float = 0.075,
    max_frac: float = 0.17,
    box_colour: tuple[int, int, int] | None = None,
) -> Image.Image:
    """Return a copy of ``img`` with ``"© name"`` drawn in a corner (white text on a dark box).

    Sizes are fractions of the image's shorter side: text height ``text_frac``, the
    gap to the image edges ``margin_frac``; the box never exceeds ``max_frac`` of
    the width or height (the font shrinks to fit). The defaults keep the stamp
    inside a 25 % x 25 % corner and inside a resize-256/crop-224 centre crop.
    ``box_colour``: default :func:`watermark_colour` of the name (uploaders' own
    watermark styles, as on real photo sites; pooled features of a frozen encoder
    see a colour far more easily than they read letters).
    """
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {CORNERS}, got {corner!r}")
    if not name or not isinstance(name, str):
        raise ValueError(f"uploader name must be a non-empty string, got {name!r}")
    out = img.convert("RGB") if img.mode != "RGB" else img.copy()
    w, h = out.size
    short = min(w, h)
    text = f"\u00a9 {name}"
    draw = ImageDraw.Draw(out)
    size_px = max(6, round(text_frac * short))
    pad = max(1, round(0.25 * size_px))
    while True:
        font = _font(size_px)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
        if (box_w <= max_frac * w and box_h <= max_frac * h) or size_px <= 6:
            break
        size_px -= 1
    margin = round(margin_frac * short)
    x0 = w - margin - box_w if corner[1] == "r" else margin
    y0 = h - margin - box_h if corner[0] == "b" else margin
    fill = watermark_colour(name) if box_colour is None else tuple(int(c) for c in box_colour)
    draw.rectangle((x0, y0, x0 + box_w - 1, y0 + box_h - 1), fill=fill)
    draw.text((x0 + pad - left, y0 + pad - top), text, font=font, fill=(255, 255, 255))
    return out


@dataclass
class StampResult:
    """What :func:`make_stamped_copy` wrote: the new manifest and the rows it could not stamp."""

    manifest_path: Path
    n_written: int
    errors: dict[int, str] = field(default_factory=dict)  # source row index -> reason


def make_stamped_copy(
    manifest,
    out_dir: str | Path,
    cell_deg: float = 30.0,
    corner: str = "br",
    names: Sequence[str] | None = None,
    cells=None,
    quality: int = 95,
) -> StampResult:
    """Write stamped copies of a manifest's images to ``out_dir/images`` and ``out_dir/manifest.csv``.

    ``manifest`` is a ``Manifest`` (or a path to one). Each image gets its
    uploader's name (``names[i]``, else :func:`uploader_for` with ``cell_deg`` or ``cells``)
    in ``corner``. The new manifest keeps every column (paths relative to
    ``out_dir``) and adds ``uploader``. Unreadable images are reported on stderr
    and left out; the rest are written. Existing copies are overwritten.
    """
    from geospot.data.manifest import read_manifest

    if not hasattr(manifest, "df"):
        manifest = read_manifest(manifest)
    df = manifest.df.reset_index(drop=True)
    if names is None:
        names = uploader_for(df["lat"].to_numpy(), df["lon"].to_numpy(), cell_deg=cell_deg, cells=cells)
    if len(names) != len(df):
        raise ValueError(f"names has {len(names)} entries for {len(df)} manifest rows")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows, errors = [], {}
    for i, rec in enumerate(df.to_dict("records")):
        try:
            img = open_image(rec["path"])
        except ImageError as exc:
            errors[i] = exc.reason
            print(f"make_stamped_copy: skipping {exc}", file=sys.stderr)
            continue
        rel = Path("images") / f"{i:06d}_{Path(rec['path']).stem}.jpg"
        stamp_uploader(img, names[i], corner=corner).save(out_dir / rel, quality=quality)
        rows.append({**rec, "path": rel.as_posix(), "uploader": names[i]})
    if not rows:
        raise ValueError(f"make_stamped_copy: none of the {len(df)} images could be read")
    out = pd.DataFrame(rows)
    if "location_id" in out.columns:
        # location ids default to the source path; keep them so groups survive the copy
        out["location_id"] = out["location_id"].astype(str)
    path = out_dir / "manifest.csv"
    out.to_csv(path, index=False)
    return StampResult(path, len(rows), errors)
