"""Read single files out of tar and zip archives without extracting them.

A photo inside an archive has a *virtual path*: the archive's path, `#`, and the
member's name, e.g. `/data/shards/00012.tar#000120034.jpg`. Virtual paths go
wherever image paths go (manifests, the embedding cache, `open_image`), so a
dataset shipped as WebDataset/img2dataset tar shards or as zips of JPEGs (OSV-5M)
is used in place.

Random access: an uncompressed tar is indexed once per process (member name ->
byte offset and size: one pass over the 512-byte headers, seeking past the
data) and members are then read with `os.pread`, which is safe from many
decoding threads at once. Zips are read through one `zipfile.ZipFile` per
archive (its central directory is the index; reads are serialised by zipfile's
own lock). Compressed tars (`.tar.gz`) cannot be read at random and are refused
with a clear reason.
"""
from __future__ import annotations

import os
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass

__all__ = ["ARCHIVE_SUFFIXES", "ArchiveError", "Member", "is_virtual", "list_members", "member_problem", "read_member",
           "split_virtual", "virtual_path"]

ARCHIVE_SUFFIXES = (".tar", ".zip")
_COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
# The archive part ends at the first ".tar#" / ".zip#": member names may contain '#', archive names rarely do.
_VIRTUAL = re.compile(r"^(.*?\.(?:tar|zip))#(.+)$", re.IGNORECASE)


class ArchiveError(OSError):
    """An archive (or a member) that cannot be read, with the reason."""


@dataclass(frozen=True)
class Member:
    """One regular file inside an archive: `name`, `size` in bytes, data `offset` (tar only)."""

    name: str
    size: int
    offset: int = -1


def virtual_path(archive: str | os.PathLike, member: str) -> str:
    """`archive#member` (the archive made absolute)."""
    return f"{os.path.abspath(os.fspath(archive))}#{member}"


def split_virtual(path: str | os.PathLike) -> tuple[str, str] | None:
    """(archive, member) of a virtual path, or None for an ordinary path (or an existing file named so)."""
    text = os.fspath(path)
    if "#" not in text:
        return None
    m = _VIRTUAL.match(text)
    if m is None or os.path.exists(text):
        return None
    return m.group(1), m.group(2)


def is_virtual(path: str | os.PathLike) -> bool:
    return split_virtual(path) is not None


class _Index:
    """Members of one archive in stored order, and how to read them."""

    def __init__(self, path: str) -> None:
        self.path = path
        st = os.stat(path)
        self.stamp = (st.st_size, st.st_mtime_ns)
        self.members: list[Member] = []
        self.error: str | None = None  # set when the archive is damaged after some good members
        self._fd: int | None = None
        self._zip: zipfile.ZipFile | None = None
        low = path.lower()
        if low.endswith(_COMPRESSED_TAR):
            raise ArchiveError(f"{path}: compressed tar cannot be read at random; decompress it (e.g. gunzip) first")
        if low.endswith(".zip"):
            self._index_zip()
        else:
            self._index_tar()
        self.by_name = {m.name: m for m in self.members}

    def _index_tar(self) -> None:
        try:
            tf = tarfile.open(self.path, mode="r:")  # plain tar only: seekable, no decompression
        except tarfile.ReadError as exc:
            raise ArchiveError(f"{self.path}: not a readable (uncompressed) tar archive ({exc})") from None
        with tf:
            try:
                for info in tf:
                    if info.isfile():
                        self.members.append(Member(info.name, info.size, info.offset_data))
            except (tarfile.ReadError, EOFError, OSError) as exc:
                # A shard cut short (a copy interrupted): keep what is complete, report the rest.
                self.error = f"damaged or truncated after {len(self.members)} files ({exc})"
        end = os.path.getsize(self.path)
        good = [m for m in self.members if m.offset + m.size <= end]
        if len(good) < len(self.members):
            self.error = self.error or f"truncated: {len(self.members) - len(good)} file(s) cut short"
            self.members = good
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def _index_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(f"{self.path}: not a readable zip archive ({exc})") from None
        self.members = [Member(i.filename, i.file_size) for i in self._zip.infolist() if not i.is_dir()]

    def read(self, name: str) -> bytes:
        m = self.by_name.get(name)
        if m is None:
            raise ArchiveError(f"no file {name!r} in {self.path}")
        if self._zip is not None:
            try:
                return self._zip.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # corrupt member
                raise ArchiveError(f"{self.path}#{name}: cannot read from the zip ({exc})") from None
        data = os.pread(self._fd, m.size, m.offset)
        if len(data) != m.size:
            raise ArchiveError(f"{self.path}#{name}: truncated ({len(data)} of {m.size} bytes)")
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._zip is not None:
            self._zip.close()


_lock = threading.Lock()
_indexes: dict[str, _Index] = {}
_MAX_OPEN = 64  # archives kept open per process (file descriptors); a shard is read front to back


def _index(archive: str) -> _Index:
    path = os.path.abspath(archive)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: archive not found") from None
    with _lock:
        idx = _indexes.get(path)
        if idx is not None and idx.stamp == (st.st_size, st.st_mtime_ns):
            return idx
        if idx is not None:  # rewritten since indexed
            idx.close()
        idx = _Index(path)
        if len(_indexes) >= _MAX_OPEN:
            oldest = next(iter(_indexes))
            _indexes.pop(oldest).close()
        _indexes[path] = idx
        return idx


def list_members(archive: str | os.PathLike) -> tuple[list[Member], str | None]:
    """(regular files in stored order, damage report or None); raises `ArchiveError` if unreadable."""
    idx = _index(os.fspath(archive))
    return list(idx.members), idx.error


def read_member(path: str | os.PathLike, member: str | None = None) -> bytes:
    """Bytes of one archived file, by virtual path or by (archive, member); raises `ArchiveError`."""
    if member is None:
        parts = split_virtual(path)
        if parts is None:
            raise ArchiveError(f"{path}: not an archive member (expected ARCHIVE.tar#NAME or ARCHIVE.zip#NAME)")
        path, member = parts
    return _index(os.fspath(path)).read(member)


def member_problem(path: str | os.PathLike) -> str | None:
    """Why the archived file at a virtual path cannot be used (missing archive or member, empty), or None."""
    parts = split_virtual(path)
    if parts is None:
        return f"file not found: {path}"
    try:
        m = _index(parts[0]).by_name.get(parts[1])
    except ArchiveError as exc:
        return str(exc)
    if m is None:
        return f"no file {parts[1]!r} in {parts[0]}"
    return f"empty file (0 bytes): {path}" if m.size == 0 else None
