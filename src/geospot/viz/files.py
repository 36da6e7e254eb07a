"""Map files for the CLI: one PNG per answer (``locate --map/--map-dir``) and the cell map (``cells --map``)."""
from __future__ import annotations

import sys
from pathlib import Path

from geospot.viz.maps import cells_map, probability_map

MAP_DPI = 110


def check_map_options(map_path: str | None, map_dir: str | None, n_files: int, same_place: bool) -> None:
    """One clear line (SystemExit) for option combinations that cannot work, before any work is done."""
    if map_path and map_dir:
        raise SystemExit("error: --map and --map-dir: give one (--map for one photo, --map-dir for several)")
    if map_path and not same_place and n_files > 1:
        raise SystemExit(f"error: --map {map_path}: {n_files} photos give {n_files} maps; use --map-dir DIR "
                         "(or --same-place for one answer)")
    if map_path and not str(map_path).lower().endswith((".png", ".svg", ".pdf", ".jpg", ".jpeg")):
        raise SystemExit(f"error: --map {map_path}: the file name must end in .png, .svg, .pdf or .jpg")


def _unique_name(path: str, used: set[str]) -> str:
    stem = Path(path).stem or "photo"
    name, n = f"{stem}.map.png", 1
    while name in used:  # the same file name in two folders
        n += 1
        name = f"{stem}-{n}.map.png"
    used.add(name)
    return name


def save_locate_maps(results, cells, map_path: str | None = None, map_dir: str | None = None) -> list[Path]:
    """Write the probability map of every successful answer; returns the files written.

    ``--map`` writes the single answer to that file; ``--map-dir`` writes
    ``<photo stem>.map.png`` per answer into the folder. Answers without cell
    probabilities (errors) get no map.
    """
    answers = [r for r in results if getattr(r, "probs", None) is not None]
    if not answers or not (map_path or map_dir):
        return []
    written = []
    if map_path:
        targets = [Path(map_path)]
    else:
        used: set[str] = set()
        targets = [Path(map_dir) / _unique_name(r.path, used) for r in answers]
    for answer, target in zip(answers, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        fig = probability_map(cells, answer.probs, answer)
        fig.savefig(target, dpi=MAP_DPI)
        written.append(target)
        print(f"map: {answer.path} -> {target}", file=sys.stderr)
    return written


def save_cells_map(cells, path: str) -> Path:
    """Write the map of a cell table coloured by places per cell."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    cells_map(cells).savefig(target, dpi=MAP_DPI)
    return target
