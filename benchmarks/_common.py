"""Helpers shared by the benchmark scripts (not part of the package)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

SHARED_DATA = Path(os.environ.get("GEOSPOT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def require_shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        sys.exit(f"benchmark needs the real data at {SHARED_DATA} (set GEOSPOT_SHARED_DATA)")
    return SHARED_DATA


def print_table(header: list[str], rows: list[list], title: str = "") -> None:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    if title:
        print(title)
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


#: The Street View collections of ../shared/data, each a different camera/year/region mix.
COLLECTIONS = ("global", "croatia", "sample", "cities", "nigeria")


def collection_data(names=COLLECTIONS, encoder: str = "efficientnet-lite0", progress: bool = True,
                    precision: str = "fp32"):
    """``(combined manifest with a `collection` column, EmbeddingResult-like)`` for the shared
    collections, each embedded through its own manifest (so the cache is shared with
    `geospot embed` on that manifest and with every other benchmark). ``precision="int8"``:
    through the quantised ONNX export instead (`geospot encoders --quantize`), cached apart."""
    from types import SimpleNamespace

    import numpy as np

    from geospot.data.combine import combine
    from geospot.data.manifest import read_manifest
    from geospot.workflows.embedding import embed_manifest

    data = require_shared_data()
    parts, embs = [], []
    for name in names:
        m = read_manifest(data / f"streetview-{name}" / "manifest.csv")
        parts.append((name, m))
        embs.append(embed_manifest(m, encoder, progress=progress) if precision == "fp32"
                    else _embed_quantised(m, encoder, precision, progress))
    offsets = np.cumsum([0] + [len(e.ok) for e in embs])
    emb = SimpleNamespace(
        embeddings=np.concatenate([e.embeddings for e in embs]),
        ok=np.concatenate([np.asarray(e.ok) for e in embs]),
        errors={int(o) + i: r for e, o in zip(embs, offsets) for i, r in e.errors.items()},
    )
    return combine(parts), emb


def _embed_quantised(manifest, encoder: str, precision: str, progress: bool):
    """A manifest through the quantised export, with the full-precision pipeline's views and cache."""
    from geospot.encoders.embed import embed_paths
    from geospot.encoders.onnx_runtime import OnnxRuntime
    from geospot.encoders.preprocess import DEFAULT_VIEWS
    from geospot.workflows.embedding import cache_root

    runtime = OnnxRuntime.pretrained(encoder, precision)
    return embed_paths(list(manifest.paths), runtime, runtime.preprocess.with_views(DEFAULT_VIEWS),
                       cache_dir=cache_root() / "embeddings", progress=progress)
