"""Explicit, opt-in downloads: resumable, size- and hash-checked, with one-line failures.

Nothing in geospot calls this implicitly: only `geospot models --download` /
`geospot encoders --download` (and the functions behind them) do. A download is
written to `<target>.part`, resumed with an HTTP Range request when the partial
file is there, checked against the expected size and SHA-256 (pinned, or the
64-hex ETag Hugging Face serves for large files) and renamed into place only
when complete, so an interrupted or corrupted download is never used.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')


class DownloadError(OSError):
    """A download failed; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its URL and, when known in advance, its size and SHA-256."""

    url: str
    size: int | None = None
    sha256: str | None = None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "geospot", **({"Range": f"bytes={start}-"} if start else {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the partial file is already complete (or bigger than the file)
            return None
        raise DownloadError(f"{url}: download failed (the server answered HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {_host(url)} ({reason}): this download needs a network connection; "
                            f"connect and run the same command again (it resumes)") from None


def fetch(remote: RemoteFile, target: str | Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `remote` to `target` (resuming `<target>.part`); verify size and SHA-256; return `target`.

    An existing `target` is trusted only if its size (and pinned hash) match.
    Raises `DownloadError` (one line) on network failure or a verification mismatch.
    """
    from tqdm import tqdm

    target = Path(target)
    if target.is_file() and _matches(target, remote):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    if remote.size is not None and start > remote.size:
        part.unlink()
        start = 0
    response = _open(remote.url, start, timeout)
    etag_sha = None
    if response is not None:
        with response:
            etag_sha = _etag_sha256(response.headers)
            if start and response.status != 206:  # server ignored the Range header: start over
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else remote.size
            if remote.size is not None and total is not None and total != remote.size:
                raise DownloadError(f"{remote.url}: the server offers {total} bytes, expected {remote.size}; "
                                    f"not downloaded")
            if progress:
                print(f"geospot: downloading {remote.url} -> {target}" + (" (resuming)" if start else ""),
                      file=sys.stderr)
            try:
                with open(part, "ab" if start else "wb") as out, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, desc=target.name, file=sys.stderr,
                    disable=not progress,
                ) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            except (OSError, socket.timeout) as exc:
                raise DownloadError(f"{remote.url}: interrupted after {part.stat().st_size} bytes ({exc}); "
                                    f"run the same command again to resume") from None
    _verify(part, remote, etag_sha)
    os.replace(part, target)
    return target


def _etag_sha256(headers) -> str | None:
    # Hugging Face serves the SHA-256 of large (LFS) files as their ETag.
    for key in ("X-Linked-Etag", "ETag"):
        m = _SHA256.match((headers.get(key) or "").strip())
        if m:
            return m.group(1)
    return None


def _matches(path: Path, remote: RemoteFile) -> bool:
    if remote.size is not None and path.stat().st_size != remote.size:
        return False
    return remote.sha256 is None or sha256_file(path) == remote.sha256


def _verify(part: Path, remote: RemoteFile, etag_sha: str | None) -> None:
    size = part.stat().st_size
    if remote.size is not None and size != remote.size:
        if size > remote.size:
            part.unlink()
        raise DownloadError(f"{remote.url}: got {size} of {remote.size} bytes; run the same command again to resume")
    expected = remote.sha256 or etag_sha
    if expected is not None:
        actual = sha256_file(part)
        if actual != expected:
            part.unlink()  # a corrupt file must not be resumed either
            raise DownloadError(f"{remote.url}: SHA-256 mismatch (got {actual[:12]}..., expected {expected[:12]}...); "
                                f"the corrupt download was deleted")

