"""Several manifests as one, with a ``collection`` column saying where each row came from.

Cross-collection evaluation (train on some collections, test on one held out)
needs rows from several manifests in one table. A collection is named by
``NAME=PATH`` or, by default, after the manifest's folder (``data/hr/manifest.csv``
-> ``hr``; a manifest alone in the working folder -> its file stem). Location ids
are prefixed with the collection so two collections never share a place by accident.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from geospot.data.manifest import Manifest

COLLECTION_COLUMN = "collection"


def parse_named(spec: str) -> tuple[str | None, str]:
    """``"NAME=PATH"`` -> (NAME, PATH); a plain path -> (None, PATH). A path that exists wins."""
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
        if name and "/" not in name and os.sep not in name:
            return name, path
    return None, spec


def collection_name(path: str | os.PathLike) -> str:
    p = Path(os.path.abspath(path))
    parent = p.parent.name
    return parent if parent and p.stem in ("manifest", "data", "index", "photos") else p.stem


def combine(manifests: list[tuple[str, Manifest]]) -> Manifest:
    """One manifest from ``[(collection name, manifest), ...]``. Duplicate names are refused.
    Rows keep their absolute paths; an existing ``collection`` column is overwritten."""
    names = [n for n, _ in manifests]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two manifests have the collection name {dup[0]!r}; name them with NAME=PATH")
    frames, rows = [], []
    for name, m in manifests:
        df = m.df.copy()
        df[COLLECTION_COLUMN] = name
        df["location_id"] = [f"{name}/{g}" for g in df["location_id"].astype(str)]
        frames.append(df)
        rows.append(m.row_numbers)
    df = pd.concat(frames, ignore_index=True, sort=False)
    problems = [p for _, m in manifests for p in m.problems]
    root = Path(os.path.commonpath([str(m.root) for _, m in manifests])) if manifests else None
    return Manifest(df, source=None, root=root, row_numbers=np.concatenate(rows) if rows else None,
                    problems=problems)
