"""Uploaded photos: written only into a per-request temporary folder, size- and pixel-limited.

A file over a limit becomes a per-file error (the same ``{"path", "error"}``
object as ``geospot locate --json``) and the other photos are still answered.
The folder is deleted when the answer is ready (see :func:`upload_folder`).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from geospot.predict import IMAGE_EXTENSIONS

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one request may send."""

    max_files: int = 32
    max_file_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 60_000_000

    @property
    def max_request_bytes(self) -> int:
        # Room for the multipart framing and form fields around the files.
        return self.max_files * self.max_file_bytes + 1024 * 1024


@dataclass
class Upload:
    """One received file: the name the user gave it, where it lies, or why it was refused."""

    name: str
    path: str | None = None
    error: str | None = None


def display_name(filename: str | None, index: int) -> str:
    """The user's file name without any folder part (never trusted as a path)."""
    base = re.split(r"[\\/]", str(filename or ""))[-1].strip()
    return base or f"photo-{index + 1}"


@contextmanager
def upload_folder():
    """A fresh private temporary folder, removed with everything in it on exit."""
    folder = tempfile.mkdtemp(prefix="geospot-serve-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_upload(stream, filename: str | None, index: int, folder: str, limits: Limits) -> Upload:
    """Copy one uploaded stream into ``folder`` under a generated name, enforcing the size and pixel limits."""
    name = display_name(filename, index)
    suffix = Path(name).suffix.lower()
    target = os.path.join(folder, f"{index:04d}{suffix if suffix in IMAGE_EXTENSIONS else ''}")
    size = 0
    with open(target, "wb") as out:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limits.max_file_bytes:
                out.close()
                os.remove(target)
                return Upload(name, error=f"file is larger than the server's limit of "
                                          f"{limits.max_file_bytes // (1024 * 1024)} MB")
            out.write(chunk)
    if size == 0:
        return Upload(name, error="empty file")
    too_big = _pixel_check(target, limits.max_pixels)
    if too_big:
        return Upload(name, error=too_big)
    return Upload(name, path=target)


def _pixel_check(path: str, max_pixels: int) -> str | None:
    """A reason when the image header declares more pixels than allowed (read before any decoding)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
    except Exception:  # undecodable files get the predictor's own, CLI-identical error
        return None
    if w * h > max_pixels:
        return f"image is {w}x{h} ({w * h / 1e6:.0f} MP), over the server's limit of {max_pixels / 1e6:.0f} MP"
    return None
