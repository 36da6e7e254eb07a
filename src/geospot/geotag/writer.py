"""Write one position into one photo: EXIF for JPEG, an XMP sidecar otherwise; verified and logged.

Order of operations for every write (what makes a crash harmless):
1. build the new bytes in memory and verify them (GPS reads back exactly,
   JPEG: every byte outside the EXIF segment unchanged);
2. log the change with its backup, flushed to disk;
3. atomic rename of a fsynced temp file over the target, original times kept;
4. read the file back from disk and check its sha256.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from geospot.geotag.atomic import atomic_write
from geospot.geotag.changelog import ChangeLog, sha256
from geospot.geotag.fix import GpsFix, same_position
from geospot.geotag.jpeg import JpegError, is_jpeg, read_exif_gps, segments, xmp_packets
from geospot.geotag.xmp import SidecarError, edited_sidecar, gps_values, new_sidecar, read_sidecar_gps, sidecar_path

SIDECAR_STYLES = ("ext", "stem")
# camera RAW files: never edited, located only through --apply (geospot cannot decode them)
RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
                  ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".rwl", ".erf", ".kdc", ".dcr", ".mrw", ".mos"}


def is_photo_name(path: str | Path) -> bool:
    """A file type a sidecar makes sense for (an image or camera RAW extension)."""
    from geospot.predict import IMAGE_EXTENSIONS

    return Path(path).suffix.lower() in IMAGE_EXTENSIONS | RAW_EXTENSIONS


@dataclass
class Outcome:
    path: str
    status: str  # written | would-write | has-gps | failed
    message: str = ""
    target: str = ""


def write_method(path: str | Path, force_sidecar: bool = False) -> str:
    """'exif' (edit the JPEG in place) or 'sidecar'."""
    if force_sidecar:
        return "sidecar"
    with open(path, "rb") as fh:
        return "exif" if is_jpeg(fh.read(3)) else "sidecar"


def existing_gps(path: str | Path, sidecar_style: str = "ext") -> str | None:
    """Where the photo already has a GPS position ('EXIF', 'XMP', 'sidecar photo.xmp'), or None.

    Looks in EXIF (JPEG: our parser; others: Pillow), embedded XMP of JPEGs, and
    both sidecar names, so a photo located by any tool is left alone."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(3)
    if is_jpeg(head):
        data = p.read_bytes()
        if read_exif_gps(data) or _pillow_gps(p):  # two readers: when in doubt, the photo has GPS
            return "EXIF"
        try:
            for packet in xmp_packets(data):
                if any(v["lat"] is not None for v in _safe_gps_values(packet)):
                    return "embedded XMP"
        except JpegError:
            pass
    elif _pillow_gps(p):
        return "EXIF"
    for style in SIDECAR_STYLES:
        sc = sidecar_path(p, style)
        try:
            if read_sidecar_gps(sc):
                return f"sidecar {sc.name}"
        except SidecarError:
            continue
    return None


def _pillow_gps(path: Path):
    from geospot.data.images import ImageError, read_gps_exif

    try:
        return read_gps_exif(path)
    except ImageError:
        return None


def _safe_gps_values(xml: bytes) -> list[dict]:
    try:
        return gps_values(xml.rstrip(b"\x00 \n"))
    except SidecarError:
        return []


def _verify_jpeg(old: bytes, new: bytes, splice, fix: GpsFix) -> None:
    segments(new)  # still a parseable JPEG
    if new[:splice.offset] != old[:splice.offset] or \
            new[splice.offset + len(splice.new):] != old[splice.offset + len(splice.old):]:
        raise JpegError("internal error: bytes outside the EXIF segment changed")
    back = read_exif_gps(new)
    if back is None or not same_position((back["lat"], back["lon"]), (fix.lat, fix.lon)):
        raise JpegError("internal error: GPS does not read back as written")


def write_fix(photo: str | Path, fix: GpsFix, *, method: str, log: ChangeLog | None, sidecar_style: str = "ext",
              overwrite: bool = False, dry_run: bool = False, keep_times: bool = True) -> Outcome:
    """Write `fix` into `photo` (method 'exif' or 'sidecar'); one Outcome, never an exception for bad files."""
    name = str(photo)
    try:
        real = Path(os.path.realpath(photo))  # write through symlinks, never replace the link
        if not real.is_file():
            return Outcome(name, "failed", "no such file")
        # file times first: any read below (GPS checks) may bump the access time we keep
        sc = sidecar_path(real, sidecar_style)
        target = real if method == "exif" else sc
        st = target.stat() if target.is_file() else None
        if not overwrite:
            where = existing_gps(real, sidecar_style)
            if where:
                return Outcome(name, "has-gps", f"already has GPS ({where})")
        if method == "sidecar" and not is_photo_name(real):
            return Outcome(name, "failed", "not a photo (unknown file type); no sidecar written")
        if method == "exif":
            return _write_exif(name, real, st, fix, log, dry_run, keep_times)
        return _write_sidecar(name, real, sc, st, fix, log, overwrite, dry_run, keep_times)
    except (ValueError, struct.error) as exc:  # JpegError, SidecarError, ExifError, undecodable sidecar text
        return Outcome(name, "failed", str(exc))
    except OSError as exc:
        return Outcome(name, "failed", exc.strerror or str(exc))


def _write_exif(name, real: Path, st, fix, log, dry_run, keep_times) -> Outcome:
    from geospot.geotag.jpeg import gps_splice

    old = real.read_bytes()
    splice = gps_splice(old, fix)
    new = splice.apply(old)
    _verify_jpeg(old, new, splice, fix)
    if dry_run:
        return Outcome(name, "would-write", "EXIF GPS", str(real))
    log.record({"action": "exif", "photo": str(real), "target": str(real), "sha256_before": sha256(old),
                "sha256_after": sha256(new), "offset": splice.offset, "new_len": len(splice.new),
                "mtime_ns": st.st_mtime_ns, "atime_ns": st.st_atime_ns, **_fix_fields(fix)}, backup=splice.old)
    times = (st.st_atime_ns, st.st_mtime_ns) if keep_times else None
    atomic_write(real, new, times_ns=times)
    if not _on_disk(real, new, times):
        return Outcome(name, "failed", "file on disk does not match what was written", str(real))
    return Outcome(name, "written", "EXIF GPS", str(real))


def _write_sidecar(name, real: Path, sc: Path, st, fix, log, overwrite, dry_run, keep_times) -> Outcome:
    old = sc.read_bytes() if sc.is_file() else None
    if old is None:
        text = new_sidecar(fix)
    else:
        text = edited_sidecar(old.decode("utf-8", errors="strict"), fix, replace_gps=overwrite)
    new = text.encode("utf-8")
    back = [v for v in gps_values(new) if v["lat"] is not None]
    if len(back) != 1 or not same_position((back[0]["lat"], back[0]["lon"]), (fix.lat, fix.lon)):
        raise SidecarError("internal error: sidecar GPS does not read back as written")
    if dry_run:
        return Outcome(name, "would-write", f"sidecar {sc.name}", str(sc))
    st = st if old is not None else None
    log.record({"action": "sidecar-edit" if old is not None else "sidecar-new", "photo": str(real), "target": str(sc),
                "sha256_before": sha256(old) if old is not None else "", "sha256_after": sha256(new),
                "mtime_ns": st.st_mtime_ns if st else "", "atime_ns": st.st_atime_ns if st else "",
                **_fix_fields(fix)}, backup=old)
    times = (st.st_atime_ns, st.st_mtime_ns) if (st is not None and keep_times) else None
    atomic_write(sc, new, times_ns=times)
    if not _on_disk(sc, new, times):
        return Outcome(name, "failed", "sidecar on disk does not match what was written", str(sc))
    return Outcome(name, "written", f"sidecar {sc.name}", str(sc))


def _on_disk(path: Path, data: bytes, times: tuple[int, int] | None) -> bool:
    """Read the file back; then restore its times (reading it bumped the access time)."""
    ok = path.read_bytes() == data
    if times is not None:
        os.utime(path, ns=times)
    return ok


def _fix_fields(fix: GpsFix) -> dict:
    return {"lat": f"{fix.lat:.9f}", "lon": f"{fix.lon:.9f}",
            "radius_m": "" if fix.radius_m is None else f"{fix.radius_m:.0f}", "method": fix.method}
