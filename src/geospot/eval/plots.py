"""Report figures: a country confusion matrix and cumulative error curves.

matplotlib is imported inside the functions (``import geospot.eval.plots`` stays
cheap) and used through ``matplotlib.figure.Figure`` with the Agg canvas, never
pyplot: no global backend state, no display needed, safe in worker threads.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from geospot.eval.metrics import THRESHOLDS_KM

OTHER = "(other)"
UNKNOWN = "(unknown)"
#: Errors below this are drawn at it (a log axis cannot show 0 km).
MIN_PLOT_KM = 0.1
#: Half the Earth's circumference: no great-circle error is larger.
MAX_PLOT_KM = 20040.0


def _label(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return UNKNOWN
    s = str(x)
    return s if s.strip() else UNKNOWN


def _new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def confusion_matrix(
    true_labels: Sequence[Any],
    pred_labels: Sequence[Any],
    out_png: str | Path,
    out_csv: str | Path,
    labels: Sequence[Any] | None = None,
    max_labels: int = 30,
):
    """Count matrix (rows: true label, columns: predicted), written as CSV and PNG.

    ``labels`` fixes the order; by default labels are ordered by how often they
    are the true label, then by how often predicted, then alphabetically. Any
    label outside ``labels`` is counted under ``"(other)"`` so nothing is lost;
    missing labels become ``"(unknown)"``. The CSV holds every label. The PNG
    shows the ``max_labels`` most frequent true labels, each row normalised by
    that label's total (predictions outside the shown labels go to an
    ``"(other)"`` column, so shown rows still add up to 100 %).

    Returns the counts as a ``pandas.DataFrame`` (index: true, columns: predicted).
    """
    import pandas as pd

    true = [_label(x) for x in true_labels]
    pred = [_label(x) for x in pred_labels]
    if len(true) != len(pred):
        raise ValueError(f"true_labels ({len(true)}) and pred_labels ({len(pred)}) differ in length")
    if not true:
        raise ValueError("no labels to tabulate (empty input)")
    if max_labels < 1:
        raise ValueError(f"max_labels must be >= 1, got {max_labels}")
    true_count, pred_count = Counter(true), Counter(pred)
    if labels is None:
        order = sorted(set(true) | set(pred), key=lambda x: (-true_count[x], -pred_count[x], x))
    else:
        order = list(dict.fromkeys(_label(x) for x in labels))
        if (set(true) | set(pred)) - set(order) and OTHER not in order:
            order.append(OTHER)
    index = {lab: i for i, lab in enumerate(order)}
    other = index.get(OTHER)
    counts = np.zeros((len(order), len(order)), dtype=np.int64)
    for t, p in zip(true, pred):
        counts[index.get(t, other), index.get(p, other)] += 1
    df = pd.DataFrame(counts, index=pd.Index(order, name="true"), columns=pd.Index(order, name="predicted"))

    out_csv, out_png = Path(out_csv), Path(out_png)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv)
    _plot_confusion(df, out_png, max_labels)
    return df


def _plot_confusion(df, out_png: Path, max_labels: int) -> None:
    row_total = df.to_numpy().sum(axis=1)
    # Most frequent true labels; labels never true (only predicted) are not rows worth showing.
    shown = [lab for lab, n in sorted(zip(df.index, row_total), key=lambda x: -x[1]) if n > 0][:max_labels]
    shown = [lab for lab in df.index if lab in set(shown)]  # keep the matrix order
    sub = df.loc[shown, shown].to_numpy().astype(np.float64)
    rest = df.loc[shown].to_numpy().sum(axis=1) - sub.sum(axis=1)
    cols = list(shown)
    if rest.any():
        sub = np.concatenate([sub, rest[:, None]], axis=1)
        cols.append(OTHER if OTHER not in cols else OTHER + " ")
    norm = sub / df.loc[shown].to_numpy().sum(axis=1, keepdims=True)

    n_rows, n_cols = norm.shape
    cell = 0.32 if n_cols > 15 else 0.5
    fig = _new_figure(max(5.0, 2.5 + cell * n_cols), max(4.0, 2.0 + cell * n_rows))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    fontsize = 8 if n_cols <= 32 else 6
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(cols, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(shown, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "Confusion matrix (row-normalised)"
    if len(shown) < len(df.index):
        title += f", {len(shown)} most frequent of {len(df.index)} labels"
    ax.set_title(title, fontsize=10)
    if n_cols <= 15:
        for i in range(n_rows):
            for j in range(n_cols):
                if norm[i, j] > 0:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true label")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")


def error_cdf(errors_by_method: Mapping[str, Any], out_png: str | Path) -> Path:
    """Cumulative distribution of great-circle errors (km, log x axis), one line per method.

    The 1/25/200/750/2500 km thresholds are marked. Errors below 0.1 km are
    drawn at 0.1 km. Returns the PNG path.
    """
    if not errors_by_method:
        raise ValueError("error_cdf needs at least one method")
    curves = {}
    for name, errors in errors_by_method.items():
        d = np.asarray(errors, dtype=np.float64).reshape(-1)
        if d.size == 0:
            raise ValueError(f"method {name!r} has no errors to plot")
        if not np.isfinite(d).all() or (d < 0).any():
            raise ValueError(f"method {name!r} has negative or non-finite errors")
        curves[name] = (np.sort(np.clip(d, MIN_PLOT_KM, None)), float(np.median(d)))

    fig = _new_figure(7.5, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for name, (d, median_km) in curves.items():
        frac = np.arange(1, d.size + 1) / d.size
        # Step from 0: the fraction within x km jumps at each observed error.
        ax.step(np.concatenate([[MIN_PLOT_KM], d]), np.concatenate([[0.0], frac]), where="post",
                label=f"{name} (median {median_km:,.1f} km)")
    for t in THRESHOLDS_KM:
        ax.axvline(t, color="grey", linestyle=":", linewidth=0.8)
        ax.text(t, 1.01, f"{t} km", rotation=0, ha="center", va="bottom", fontsize=7, color="dimgrey",
                transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_xlim(MIN_PLOT_KM, MAX_PLOT_KM)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("great-circle error (km, log scale)")
    ax.set_ylabel("fraction of images within error")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png


def reliability_diagram(calibration: Mapping[str, Any], out_png: str | Path) -> Path:
    """Top-cell confidence against accuracy, before and after calibration, with the
    bin counts underneath; the title gives NLL, ECE and the coverage of the radii."""
    fig = _new_figure(6.4, 6.0)
    ax = fig.add_axes([0.12, 0.32, 0.82, 0.58])
    ax_n = fig.add_axes([0.12, 0.08, 0.82, 0.16], sharex=ax)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    width = 0.045
    for shift, key, label, colour in ((-width / 2, "reliability_raw", "raw head", "#d95f02"),
                                      (width / 2, "reliability", "calibrated", "#1b9e77")):
        bins = [b for b in calibration.get(key, []) if b["n"]]
        if not bins:
            continue
        conf = np.array([b["confidence"] for b in bins])
        acc = np.array([b["accuracy"] for b in bins])
        ax.plot(conf, acc, marker="o", color=colour, label=label)
        mids = np.array([(b["low"] + b["high"]) / 2 for b in bins])
        ax_n.bar(mids + shift, [b["n"] for b in bins], width=width, color=colour)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy of the top cell")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax_n.set_xlabel("confidence of the top cell")
    ax_n.set_ylabel("photos")
    cov = ", ".join(f"{k.split('_')[1]}% radius covers {100 * v:.0f}%" for k, v in calibration.items()
                    if k.startswith("coverage_") and v is not None)
    ax.set_title(f"NLL {calibration.get('nll_raw', float('nan')):.2f} → {calibration.get('nll', float('nan')):.2f}, "
                 f"ECE {calibration.get('ece_raw', float('nan')):.3f} → {calibration.get('ece', float('nan')):.3f}\n{cov}",
                 fontsize=9)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png
