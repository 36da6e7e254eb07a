"""Folder scans and globs that say what they skip.

A scan returns the files it found AND one `(path, reason)` per entry it could not
use: a broken symbolic link, a FIFO/socket/device (opening a FIFO would block the
batch forever), a folder it may not read. Globs match file names case-insensitively
(`*.heic` finds an iPhone's `IMG_0001.HEIC`).
"""
from __future__ import annotations

import glob
import os
import stat
from typing import Iterable


def _classify(path: str) -> tuple[bool, str | None]:
    """(is a regular file, reason it is skipped or None)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return False, "broken symbolic link (its target does not exist)"
        return False, "vanished while scanning"
    except OSError as exc:
        return False, f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return True, None
    if stat.S_ISDIR(st.st_mode):
        return False, None
    if stat.S_ISFIFO(st.st_mode):
        return False, "a FIFO (named pipe), not a file"
    if stat.S_ISSOCK(st.st_mode):
        return False, "a socket, not a file"
    return False, "a device or special file, not a regular file"


def scan_folder(root: str | os.PathLike, recursive: bool = True,
                extensions: Iterable[str] | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Regular files under `root` (sorted; `extensions` compared lower-case, e.g. {'.jpg'})
    and the skipped entries with a reason. Symbolic links are followed; a link back
    into a folder already being scanned (a loop) is reported once and not entered."""
    exts = {e.lower() for e in extensions} if extensions is not None else None
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()

    def on_error(exc: OSError) -> None:
        skipped.append((os.fsdecode(exc.filename) if exc.filename else str(root),
                        f"folder cannot be read ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(os.fspath(root), onerror=on_error, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames.clear()
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a loop
            skipped.append((dirpath, "symbolic link loop (folder already scanned), not followed"))
            dirnames.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        if not recursive:
            dirnames.clear()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            is_file, reason = _classify(path)
            if exts is not None and os.path.splitext(name)[1].lower() not in exts:
                continue  # not a wanted type: neither used nor worth a line
            if is_file:
                files.append(path)
            elif reason:
                skipped.append((path, reason))
    return sorted(files), skipped


def _insensitive(pattern: str) -> str:
    """A glob pattern whose letters match either case ([...] classes are kept as written)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            j = pattern.find("]", i + 2)
            if j != -1:
                out.append(pattern[i:j + 1])
                i = j + 1
                continue
        out.append(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() and ch.lower() != ch.upper() else ch)
        i += 1
    return "".join(out)


def glob_files(pattern: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Regular files matching `pattern` (recursive `**`, letters in the file-name part
    case-insensitive) and the matched entries skipped with a reason."""
    head, tail = os.path.split(pattern)
    files, skipped = [], []
    for path in sorted(set(glob.glob(os.path.join(head, _insensitive(tail)), recursive=True))):
        is_file, reason = _classify(path)
        if is_file:
            files.append(path)
        elif reason:
            skipped.append((path, reason))
    return files, skipped


def has_magic(pattern: str) -> bool:
    return glob.has_magic(pattern)


def is_special(path: str | os.PathLike) -> str | None:
    """The reason a named path cannot be read as a file (FIFO, socket, device, broken link), or None."""
    p = os.fspath(path)
    if not os.path.lexists(p):
        return None
    is_file, reason = _classify(p)
    return None if is_file else reason
