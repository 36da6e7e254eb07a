"""Special functions in NumPy alone (no SciPy import on the prediction path: cold start)."""
from __future__ import annotations

import numpy as np

# Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, below float32 resolution.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function (vectorised, |error| < 1.5e-7) without SciPy."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    t = 1.0 / (1.0 + _ERF_P * a)
    poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
    return np.sign(x) * (1.0 - poly * np.exp(-a * a))


def ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF."""
    return 0.5 * (1.0 + erf(np.asarray(x, np.float64) / np.sqrt(2.0)))
