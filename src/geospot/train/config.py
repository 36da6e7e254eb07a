"""Hyper-parameters of head training, importable without torch (fast CLI start-up)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

LOSSES = ("haversine", "ce")
CLASS_WEIGHTINGS = ("none", "inv_sqrt")
LR_SCHEDULES = ("cosine", "step")
#: Haversine label smoothing's distance scale. Chosen leave-one-collection-out (docs/accuracy.md):
#: 250 km beat PIGEON's 75 km by +48 GeoScore [36, 61] pooled over the five held-out Street View
#: collections; 500 km scored within noise of it (+8 [-2, 18]) but cost more inside one region
#: (grouped CV within Croatia and Nigeria), so the smaller of the two.
DEFAULT_TAU_KM = 250.0


@dataclass
class TrainConfig:
    """Hyper-parameters of `train_head`; stored in every model's ``config.json``.

    ``normalize``: L2-normalise embeddings before the head (``GeoModel`` applies
    the same at prediction time). ``lr_schedule``: ``"cosine"`` (per step, to 0
    at ``epochs``) or ``"step"`` (x0.1 at 50 % and 75 % of ``epochs``).
    ``estimate_top_k``: cells in the weighted-mean estimate scored for early stopping.
    ``batch_size`` shrinks on small datasets (see ``fit.effective_batch_size``).
    ``lr`` default: 3e-3 did best of 1e-3/3e-3/1e-2 in grouped 5-fold CV on both
    global and Croatian Street View (benchmarks/bench_accuracy.py).
    ``val_fraction`` default 0.1: 10% of the places are held out and training
    stops at the epoch with the best validation GeoScore. Under
    leave-one-collection-out over the five shared Street View collections it
    beat training on everything for ``epochs`` by +38 GeoScore [24, 52]
    pooled, better on every collection (docs/accuracy.md); a fixed schedule
    overfits the training collections' cameras. ``val_fraction=0`` trains on
    everything; tiny data (the hold-out rounds to no place) does too. Early
    stopping is used when a validation set is given or ``val_fraction > 0``.
    ``patience <= 0`` disables early stopping (the best epoch is still restored).
    ``class_weighting`` default ``"inv_sqrt"``: under leave-one-collection-out over the
    five shared Street View collections it raised the pooled GeoScore of the local
    mean from 464 to 512 (docs/accuracy.md); unweighted heads favour the US.
    ``tau_km`` default: see `DEFAULT_TAU_KM`.
    """

    loss: str = "haversine"
    tau_km: float = DEFAULT_TAU_KM
    hidden: int = 0
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 30
    batch_size: int = 256
    patience: int = 8
    class_weighting: str = "inv_sqrt"
    val_fraction: float = 0.1
    seed: int = 0
    normalize: bool = True
    lr_schedule: str = "cosine"
    estimate_top_k: int = 5

    def __post_init__(self) -> None:
        def fail(name: str, want: str) -> None:
            raise ValueError(f"TrainConfig.{name} must be {want}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        for name, choices in (("loss", LOSSES), ("class_weighting", CLASS_WEIGHTINGS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in choices:
                fail(name, "one of " + ", ".join(repr(c) for c in choices))
        for name in ("epochs", "batch_size", "estimate_top_k"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "a positive integer")
        for name in ("hidden", "seed"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "an integer >= 0")
        if not is_int(self.patience):
            fail("patience", "an integer (<= 0 disables early stopping)")
        if not is_num(self.tau_km) or self.tau_km <= 0:
            fail("tau_km", "a positive number of km")
        if not is_num(self.lr) or self.lr <= 0:
            fail("lr", "a positive number")
        if not is_num(self.weight_decay) or self.weight_decay < 0:
            fail("weight_decay", "a number >= 0")
        if not is_num(self.dropout) or not 0 <= self.dropout < 1:
            fail("dropout", "a number in [0, 1)")
        if not is_num(self.val_fraction) or not 0 <= self.val_fraction < 1:
            fail("val_fraction", "a number in [0, 1)")
        if not isinstance(self.normalize, (bool, np.bool_)):
            fail("normalize", "true or false")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; missing keys take defaults, unknown keys are an error."""
        if not isinstance(d, dict):
            raise ValueError(f"TrainConfig.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**d)
