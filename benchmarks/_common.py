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
