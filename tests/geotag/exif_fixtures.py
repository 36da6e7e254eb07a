"""Hand-built EXIF blocks for the geotag tests: either byte order, a MakerNote with
absolute internal offsets, an optional GPS IFD, padding to any size."""
from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

MAKE, MODEL, EXIF_IFD, GPS_IFD, MAKERNOTE, DATETIME_ORIGINAL, USER_COMMENT = (
    0x010F, 0x0110, 0x8769, 0x8825, 0x927C, 0x9003, 0x9286)


def _entry(e, tag, typ, count, field):
    return struct.pack(e + "HHI", tag, typ, count) + field


def pack_ifd(e: str, values, at: int) -> bytes:
    """An IFD at absolute offset `at` with its out-of-line values right after it."""
    data_at = at + 2 + 12 * len(values) + 4
    head, blob = struct.pack(e + "H", len(values)), b""
    for tag, typ, count, raw in values:
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field = struct.pack(e + "I", data_at + len(blob))
            blob += raw + b"\x00" * (len(raw) % 2)
        head += _entry(e, tag, typ, count, field)
    return head + struct.pack(e + "I", 0) + blob


def build_tiff(endian: str = "<", gps: dict | None = None, pad_to: int = 0, datetime: str = "2021:06:01 12:00:00") -> bytes:
    """IFD0 (Make, Model, ExifIFD[, GPSInfo]) -> Exif IFD (DateTimeOriginal, MakerNote, UserComment).

    The MakerNote holds its own mini IFD whose value offset is absolute within
    the TIFF block (as Canon/Nikon-style notes do), so moving it would corrupt
    it. `gps`: {'lat': (d, m, s_num, s_den), 'ref': 'N', 'alt': metres} adds a
    GPS IFD with an altitude. `pad_to`: pad the block with zeros to this size."""
    e = endian
    order = b"II" if e == "<" else b"MM"
    make, model = b"GeoCam\x00", b"Model X-1000 long name\x00"
    # layout: header(8) | IFD0 | values | ExifIFD | values | makernote | [GPS IFD | values]
    n0 = 4 if gps else 3
    ifd0_at = 8
    vals0_at = ifd0_at + 2 + 12 * n0 + 4
    make_at = vals0_at
    model_at = make_at + len(make) + (len(make) % 2)
    exif_at = model_at + len(model) + (len(model) % 2)
    n1 = 3
    dt = datetime.encode() + b"\x00"
    dt_at = exif_at + 2 + 12 * n1 + 4
    uc = b"ASCII\x00\x00\x00a user comment"
    uc_at = dt_at + len(dt) + (len(dt) % 2)
    mn_at = uc_at + len(uc) + (len(uc) % 2)
    secret = b"MAKERNOTE-SECRET-PAYLOAD"
    # mini IFD with one UNDEFINED entry pointing (absolute offset) at `secret` right after it
    mn_ifd = struct.pack(e + "H", 1) + _entry(e, 0x0001, 7, len(secret), struct.pack(e + "I", mn_at + 18)) + \
        struct.pack(e + "I", 0)
    makernote = mn_ifd + secret
    gps_at = mn_at + len(makernote) + (len(makernote) % 2)

    ifd0 = [(MAKE, 2, len(make), struct.pack(e + "I", make_at)),
            (MODEL, 2, len(model), struct.pack(e + "I", model_at)),
            (EXIF_IFD, 4, 1, struct.pack(e + "I", exif_at))]
    if gps:
        ifd0.append((GPS_IFD, 4, 1, struct.pack(e + "I", gps_at)))
    out = order + struct.pack(e + "HI", 42, ifd0_at)
    out += struct.pack(e + "H", len(ifd0)) + b"".join(_entry(e, *x) for x in ifd0) + struct.pack(e + "I", 0)
    out += make + b"\x00" * (len(make) % 2) + model + b"\x00" * (len(model) % 2)
    exif = [(DATETIME_ORIGINAL, 2, len(dt), struct.pack(e + "I", dt_at)),
            (USER_COMMENT, 7, len(uc), struct.pack(e + "I", uc_at)),
            (MAKERNOTE, 7, len(makernote), struct.pack(e + "I", mn_at))]
    out += struct.pack(e + "H", len(exif)) + b"".join(_entry(e, *x) for x in exif) + struct.pack(e + "I", 0)
    out += dt + b"\x00" * (len(dt) % 2) + uc + b"\x00" * (len(uc) % 2)
    out += makernote + b"\x00" * (len(makernote) % 2)
    assert len(out) == gps_at
    if gps:
        d, m, sn, sd = gps["lat"]
        rational = 10 if gps.get("signed") else 5  # SRATIONAL, as some phones write
        values = [(1, 2, 2, gps["ref"].encode() + b"\x00"),
                  (2, rational, 3, struct.pack(e + "IIIIII", d, 1, m, 1, sn, sd)),
                  (6, 5, 1, struct.pack(e + "II", int(gps["alt"] * 10), 10))]
        if gps.get("lon"):  # without it: a GPS IFD with no usable position (lat + altitude only)
            d2, m2, sn2, sd2 = gps["lon"]
            values += [(3, 2, 2, b"E\x00"), (4, rational, 3, struct.pack(e + "IIIIII", d2, 1, m2, 1, sn2, sd2))]
        out += pack_ifd(e, sorted(values), gps_at)
    if pad_to > len(out):
        out += b"\x00" * (pad_to - len(out))
    return out


def jpeg_bytes(exif: bytes | None = None, size=(40, 30), seed: int = 0, xmp: bytes | None = None) -> bytes:
    """A baseline JPEG (JFIF APP0 from Pillow) with an optional EXIF APP1 and XMP APP1."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    extra = b""
    if exif is not None:
        payload = b"Exif\x00\x00" + exif
        extra += b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    if xmp is not None:
        payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
        extra += b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    # after SOI + JFIF APP0 (Pillow writes APP0 first)
    app0_end = 2 + 2 + struct.unpack(">H", data[4:6])[0]
    return data[:app0_end] + extra + data[app0_end:]
