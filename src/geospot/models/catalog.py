"""What can be downloaded (explicitly): sizes, licences, cache state, and the one download entry point.

`geospot models` prints this catalogue; `geospot models --download NAME` (or
`geospot encoders --download NAME`) is the only way geospot touches the
network for weights. Nothing here runs implicitly: `locate`, `eval` and every
constructor read local files only and, when they are missing, say which
command to run.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Downloadable:
    name: str
    what: str
    size: str
    licence: str
    use: str
    folder: Callable[[], Path]
    complete: Callable[[], bool]
    fetch: Callable[[bool], Path]


def _clip(name: str):
    from geospot.encoders.clip import TOKENIZER_FILES, WEIGHT_FILES, download_weights, weights_folder

    def complete() -> bool:
        return all((weights_folder(name) / f).is_file() for f in WEIGHT_FILES + TOKENIZER_FILES)

    # the tokenizer files (1.5 MB) come along so that zero-shot use works without a second download
    return (lambda: weights_folder(name)), complete, (lambda progress: download_weights(name, progress=progress,
                                                                                       tokenizer=True))


def _geoclip():
    from geospot.models.geoclip.weights import (convert_installed_package, download_geoclip, geoclip_dir,
                                                installed_package_dir, weights_path)

    def fetch(progress: bool) -> Path:
        if not weights_path().is_file():
            # an installed geoclip package holds the same files: convert them instead of downloading
            convert_installed_package() if installed_package_dir() is not None else download_geoclip(progress=progress)
        _clip("clip-vit-l14")[2](progress)
        return geoclip_dir()

    return geoclip_dir, (lambda: weights_path().is_file() and _clip("clip-vit-l14")[1]()), fetch


def catalogue() -> dict[str, Downloadable]:
    items = [
        Downloadable("geoclip", "GeoCLIP (NeurIPS 2023): location encoder + image head + 100K GPS gallery, from the "
                     "geoclip 1.3.0 wheel on PyPI, plus the CLIP ViT-L/14 tower", "40 MB + 1.7 GB", "MIT",
                     "--model geoclip", *_geoclip()),
        Downloadable("clip-vit-l14", "CLIP ViT-L/14 (openai/clip-vit-large-patch14); GeoCLIP's image tower",
                     "1.7 GB", "MIT (OpenAI CLIP)", "--encoder clip-vit-l14, --model zeroshot:clip-vit-l14",
                     *_clip("clip-vit-l14")),
        Downloadable("clip-vit-b32", "CLIP ViT-B/32 (openai/clip-vit-base-patch32)", "0.6 GB", "MIT (OpenAI CLIP)",
                     "--encoder clip-vit-b32, --model zeroshot:clip-vit-b32", *_clip("clip-vit-b32")),
        Downloadable("streetclip", "StreetCLIP (geolocal/StreetCLIP), CLIP ViT-L/14-336 tuned for geolocation",
                     "1.7 GB", "CC BY-NC 4.0: NON-COMMERCIAL use only", "--encoder streetclip, "
                     "--model zeroshot:streetclip", *_clip("streetclip")),
    ]
    return {d.name: d for d in items}


def _note(name: str, cached: bool) -> str:
    if name == "geoclip" and not cached:
        from geospot.models.geoclip.weights import installed_package_dir, weights_path

        if not weights_path().is_file() and installed_package_dir() is not None:
            return "geoclip package installed: its weights are converted locally on first use"
    return ""


def catalogue_rows() -> list[dict]:
    """One dict per downloadable thing (name, what, size, licence, use, cached, folder, note)."""
    rows = []
    for d in catalogue().values():
        cached = d.complete()
        rows.append({"name": d.name, "what": d.what, "size": d.size, "licence": d.licence, "use": d.use,
                     "cached": cached, "folder": str(d.folder()), "note": _note(d.name, cached)})
    return rows


def download(name: str, progress: bool = True) -> Path:
    """Download `name` (see `catalogue`); already complete parts are skipped, interrupted ones resumed."""
    items = catalogue()
    name = name.removeprefix("zeroshot:")
    if name not in items:
        raise ValueError(f"nothing called {name!r} can be downloaded; choose from {', '.join(items)}")
    item = items[name]
    if "NON-COMMERCIAL" in item.licence and progress:
        print(f"geospot: note: {name} is licensed {item.licence}", file=sys.stderr)
    return item.fetch(progress)


def download_or_exit(name: str, progress: bool = True) -> int:
    """The CLI's download: one line on failure (no traceback), the folder on success."""
    from geospot.downloads import DownloadError
    from geospot.models.geoclip.weights import UnsafeCheckpoint

    try:
        folder = download(name, progress=progress)
    except (DownloadError, UnsafeCheckpoint, ValueError) as exc:
        raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
    print(f"{name} -> {folder}")
    return 0
