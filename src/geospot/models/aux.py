"""Auxiliary targets (PIGEON's multi-task heads): country, driving side, capture month, climate zone.

Each auxiliary head is a linear classifier on the geocell head's input
features (the normalised embedding, or the hidden layer of an MLP head),
trained together with the geocell head (`geospot.train.fit.train_head_aux`).
Its loss reaches the *shared* layers scaled by its weight; the head's own
weights always learn from its full loss (under AdamW the scale of a loss
barely changes its own head's steps anyway). So a weight of 0 trains the
auxiliary heads as free extra predictions and leaves the geocell head
bit-identical, and a linear geocell head (no hidden layer: nothing shared
that trains) is never changed by any weight; only an MLP head
(``--hidden N``) can learn from the auxiliary targets.

Targets, per training image (``""`` = unknown, left out of that head's loss):

* ``country``: ISO-2 code of the coordinate (`geospot.geo.geocode.country_codes`,
  point in Natural Earth polygons);
* ``driving_side``: ``left``/``right`` from the country (`geospot.geo.driving`);
* ``month``: ``01``..``12`` from a manifest date column (``2021-12``, ``2021-12-03``, ...);
* ``climate``: Köppen-Geiger zone (`geospot.geo.climate`, needs ``geospot[climate]``).

Storage (torch-free to read): ``aux.safetensors`` (``<name>.weight`` [K, F],
``<name>.bias`` [K]) and the ``aux`` section of ``config.json``:
``{"file": "aux.safetensors", "heads": [{"name", "classes", "weight"}, ...]}``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AUX_TARGETS = ("country", "driving_side", "month", "climate")
AUX_FILE = "aux.safetensors"
#: Date columns looked for, in this order, when ``month`` is asked for.
DATE_COLUMNS = ("date", "datetime", "captured", "capture_date", "timestamp", "taken")
_MONTH = re.compile(r"^\s*\d{4}[-/.](\d{1,2})(?:\b|[-/.T ])")


@dataclass
class AuxTarget:
    """One auxiliary head's training data: per-row class index (-1 unknown), class names, loss weight."""

    name: str
    labels: np.ndarray  # [N] int64, -1 where unknown
    classes: list[str]
    weight: float

    def subset(self, rows) -> "AuxTarget":
        return AuxTarget(self.name, self.labels[rows], self.classes, self.weight)


@dataclass
class AuxSpec:
    """A trained head as stored: name, class names, loss weight (weights live in `AuxHeadsNumpy`/torch)."""

    name: str
    classes: list[str]
    weight: float
    extra: dict = field(default_factory=dict)


def parse_aux(names: str | list[str] | None, weights=0.2) -> dict[str, float]:
    """``"country,driving_side"`` (+ one weight for all, or ``"country=0.3,month=0.1"``) -> ``{name: weight}``."""
    if not names:
        return {}
    items = names.split(",") if isinstance(names, str) else list(names)
    out: dict[str, float] = {}
    for item in (s.strip() for s in items):
        if not item:
            continue
        name, _, w = item.partition("=")
        if name not in AUX_TARGETS:
            raise ValueError(f"unknown auxiliary target {name!r}; choose from {', '.join(AUX_TARGETS)}")
        try:
            weight = float(w) if w else float(weights)
        except ValueError:
            raise ValueError(f"auxiliary target {name!r}: weight {w!r} is not a number") from None
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"auxiliary target {name!r}: weight must be a number >= 0, got {weight}")
        out[name] = weight
    return out


def month_labels(dates) -> np.ndarray:
    """``"01"``..``"12"`` from date strings (``YYYY-MM``, ``YYYY-MM-DD``, ISO datetimes); ``""`` otherwise."""
    out = []
    for d in np.asarray(dates, dtype=object).reshape(-1):
        m = _MONTH.match(str(d)) if d is not None else None
        month = int(m.group(1)) if m else 0
        out.append(f"{month:02d}" if 1 <= month <= 12 else "")
    return np.asarray(out, dtype="<U2")


def date_column(columns) -> str | None:
    """The manifest's date column, if any (see :data:`DATE_COLUMNS`)."""
    cols = {str(c).lower(): str(c) for c in columns}
    return next((cols[c] for c in DATE_COLUMNS if c in cols), None)


def target_values(name: str, lat, lon, dates=None) -> np.ndarray:
    """Per-row class names (strings, ``""`` unknown) of one auxiliary target."""
    if name in ("country", "driving_side"):
        from geospot.geo.geocode import country_codes

        codes = country_codes(lat, lon)
        if name == "country":
            return codes
        from geospot.geo.driving import driving_side

        return driving_side(codes)
    if name == "climate":
        from geospot.geo.climate import climate_zones

        return climate_zones(lat, lon)
    if name == "month":
        if dates is None:
            raise ValueError("auxiliary target 'month' needs a date column in the manifest "
                             f"(one of: {', '.join(DATE_COLUMNS)})")
        return month_labels(dates)
    raise ValueError(f"unknown auxiliary target {name!r}; choose from {', '.join(AUX_TARGETS)}")


def build_targets(spec: dict[str, float], lat, lon, dates=None, min_known: int = 2) -> list[AuxTarget]:
    """`AuxTarget`s for ``{name: weight}``; a target with fewer than 2 known classes is an error."""
    targets = []
    for name, weight in spec.items():
        values = target_values(name, lat, lon, dates)
        classes = sorted(set(values.tolist()) - {""})
        if len(classes) < min_known:
            raise ValueError(f"auxiliary target {name!r}: the training data has {len(classes)} known "
                             f"class(es) ({', '.join(classes) or 'none'}); a head needs at least {min_known}")
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index.get(v, -1) for v in values.tolist()], dtype=np.int64)
        targets.append(AuxTarget(name, labels, classes, float(weight)))
    return targets


# ----------------------------------------------------------------- stored heads (NumPy)


class AuxHeadsNumpy:
    """Trained auxiliary heads as NumPy arrays: `predict(features)` -> ``{name: probs [B, K]}``."""

    def __init__(self, specs: list[AuxSpec], weights: dict[str, np.ndarray]):
        self.specs = specs
        self.weights = weights

    def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for s in self.specs:
            z = features @ self.weights[f"{s.name}.weight"].T + self.weights[f"{s.name}.bias"]
            z = z - z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            out[s.name] = z / z.sum(axis=1, keepdims=True)
        return out

    def config(self) -> dict:
        return {"file": AUX_FILE, "heads": [{"name": s.name, "classes": list(s.classes), "weight": s.weight}
                                            for s in self.specs]}

    def save(self, directory) -> None:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in self.weights.items()},
                  str(Path(directory) / AUX_FILE))


def read_aux(root: Path, config: dict, feature_dim: int) -> AuxHeadsNumpy | None:
    """The ``aux`` section of a model's config + ``aux.safetensors``, validated; None when absent."""
    from geospot.models.checkpoint import CheckpointError

    section = config.get("aux")
    if section is None:
        return None
    where = root / "config.json"
    if not isinstance(section, dict) or section.get("file") != AUX_FILE or not isinstance(section.get("heads"), list):
        raise CheckpointError(f"{where}: 'aux' must be {{'file': '{AUX_FILE}', 'heads': [...]}}")
    specs = []
    for h in section["heads"]:
        ok = (isinstance(h, dict) and h.get("name") in AUX_TARGETS and isinstance(h.get("classes"), list)
              and len(h["classes"]) >= 2 and all(isinstance(c, str) for c in h["classes"])
              and isinstance(h.get("weight"), (int, float)) and not isinstance(h.get("weight"), bool))
        if not ok:
            raise CheckpointError(f"{where}: bad auxiliary head {h!r} (needs a known name, 2+ class names, a weight)")
        specs.append(AuxSpec(h["name"], list(h["classes"]), float(h["weight"])))
    from geospot.models.validate import read_numpy_tensors, shape_problems

    path = root / AUX_FILE
    state = read_numpy_tensors(path, "the auxiliary heads named in config.json", CheckpointError)
    want = {}
    for s in specs:
        want[f"{s.name}.weight"] = (len(s.classes), feature_dim)
        want[f"{s.name}.bias"] = (len(s.classes),)
    problems = shape_problems({k: v.shape for k, v in state.items()}, want)
    if problems:
        raise CheckpointError(f"{path}: does not match the auxiliary heads in config.json: " + "; ".join(problems))
    weights = {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}
    bad = [k for k, v in weights.items() if not np.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN/inf) in {', '.join(sorted(bad))}")
    return AuxHeadsNumpy(specs, weights)


def aux_summary(probs: dict[str, np.ndarray], specs: list[AuxSpec], b: int, top: int = 5) -> dict:
    """One photo's auxiliary predictions for ``--json``: ``{name: {class: prob}}`` (top classes, most probable first)."""
    out = {}
    for s in specs:
        p = probs[s.name][b]
        order = np.argsort(-p, kind="stable")[: (len(p) if len(p) <= 2 else top)]
        out[s.name] = {s.classes[int(i)]: round(float(p[i]), 4) for i in order}
    return out
