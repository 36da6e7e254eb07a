"""argparse `type=` validators: a bad value is refused where it is parsed, in one line.

argparse turns an `ArgumentTypeError` into `geospot VERB: error: argument --x: reason`
(exit status 2), before any model is loaded or any file written.
"""
from __future__ import annotations

import argparse
import math
import re


def _number(text: str, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{kind.__name__} expected, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"a finite number expected, got {text!r}")
    return value


def int_range(lo: int | None = None, hi: int | None = None):
    """An integer in [lo, hi] (either bound optional)."""
    def parse(text: str) -> int:
        v = _number(text, int)
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {v}")
        return v
    parse.__name__ = "int"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """A finite float in [lo, hi]; `lo_open`/`hi_open` exclude the bound."""
    def parse(text: str) -> float:
        v = _number(text, float)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
        return v
    parse.__name__ = "float"
    return parse


positive_int = int_range(1)
nonneg_int = int_range(0)
positive_float = float_range(0.0, lo_open=True)
nonneg_float = float_range(0.0)
fraction = float_range(0.0, 1.0, hi_open=True)      # [0, 1)
open_fraction = float_range(0.0, 1.0, lo_open=True, hi_open=True)  # (0, 1)
probability = float_range(0.0, 1.0)

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device(text: str) -> str:
    """auto | cpu | cuda[:N] | mps; a CUDA device must exist (checked only when asked for)."""
    text = text.strip().lower()
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available on this machine (use cpu or auto)")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: only {torch.cuda.device_count()} CUDA device(s)")
    elif text == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError("mps: no Apple GPU is available on this machine (use cpu or auto)")
    return text


def region(text: str) -> str:
    """A region spec that resolves (country name/ISO code, bbox or GeoJSON file); kept as text."""
    from geospot.geo.regions import resolve_region

    try:
        resolve_region(text)
    except (ValueError, KeyError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def encoder(text: str) -> str:
    """A registered encoder name."""
    from geospot.encoders import list_encoders

    names = list_encoders()
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown encoder {text!r}; choose from {', '.join(names)}")
    return text
