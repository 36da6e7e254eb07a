"""Evaluation reports: ``report.json`` (the data) and ``report.md`` (for people).

The report dict (everything but ``title`` and ``methods`` optional)::

    title:       str
    model:       dict                      e.g. encoder, cells, checkpoint, training config
    dataset:     dict                      manifest, n_images, n_places, ...
    methods:     {method: metrics}         e.g. "model", "model (top cell)", "baseline: medoid"
    folds:       [fold dict]               per fold: {method: metrics} (or under a "methods" key)
                                           plus scalars ("fold" labels the row; n_train, ... JSON only)
    cv:          {method: {metric: {"mean", "std", ...}}}   see metrics.summarize_folds
    per_country: {country: metrics} or {method: {country: metrics}}
    figures:     {name: relative png path}
    notes:       [str]

Metric keys shown in tables (others stay in the JSON only): ``n``,
``median_km``, ``mean_km``, ``acc_{1,25,200,750,2500}km`` (fractions, shown as
%), ``geoscore``, ``top1``/``top5`` (cell top-k, fractions), ``country_acc`` and
``country_acc_geonames`` (OSV-5M's nearest-town definition) (fractions, or the
dict :func:`geospot.eval.metrics.accuracy` returns).
A column appears only when some row has it. Formatting is fixed, so the same
report dict always gives the same bytes.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geospot.eval.metrics import THRESHOLDS_KM

MISSING = "—"

# (key, header, kind); kind picks the number format.
COLUMNS: list[tuple[str, str, str]] = [
    ("n", "n", "int"),
    ("median_km", "median km", "km"),
    ("mean_km", "mean km", "km"),
    *[(f"acc_{t}km", f"acc@{t} km", "pct") for t in THRESHOLDS_KM],
    ("geoscore", "GeoScore", "score"),
    ("top1", "cell top-1", "pct"),
    ("top5", "cell top-5", "pct"),
    ("country_acc", "country acc", "pct"),
    ("country_acc_geonames", "country acc (GeoNames)", "pct"),  # OSV-5M's definition
]
COUNTRY_COLUMNS = ["n", "median_km", "acc_25km", "acc_200km", "acc_750km", "geoscore", "country_acc"]


def to_jsonable(x: Any) -> Any:
    """Plain-JSON copy: numpy scalars/arrays, tuples and paths converted; NaN/inf -> null."""
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [to_jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, str):
        return x
    raise TypeError(f"report value of type {type(x).__name__} is not JSON-serialisable: {x!r}")


def _value(metrics: Mapping[str, Any], key: str) -> Any:
    v = metrics.get(key)
    if isinstance(v, Mapping) and "accuracy" in v:  # the dict metrics.accuracy() returns
        v = v["accuracy"]
    return v


def _num(v: Any, kind: str) -> str:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return MISSING
    f = float(v)
    if not math.isfinite(f):
        return MISSING
    if kind == "int":
        return f"{f:,.0f}" if f == round(f) else f"{f:,.1f}"
    if kind == "km":
        return f"{f:,.1f}"
    if kind == "pct":
        return f"{100 * f:.1f}%"
    return f"{f:,.0f}"  # score


def _cell(v: Any, kind: str) -> str:
    """A table cell: a number, or ``mean ± std`` for a fold summary."""
    if isinstance(v, Mapping) and "mean" in v:
        mean, std = _num(v.get("mean"), kind), _num(v.get("std"), kind)
        if kind == "pct" and std != MISSING:
            std = std.rstrip("%")
            return f"{mean.rstrip('%')} ± {std}%"
        return f"{mean} ± {std}"
    return _num(v, kind)


CI_KEYS = ("geoscore", "median_km")


def _ci(metrics: Mapping[str, Any], key: str, kind: str) -> str:
    """`` [low, high]`` after the headline metrics that carry a bootstrap interval."""
    ci = metrics.get("ci") if isinstance(metrics, Mapping) else None
    if key not in CI_KEYS or not isinstance(ci, Mapping) or key not in ci:
        return ""
    lo, hi = ci[key]
    return f" [{_num(lo, kind)}, {_num(hi, kind)}]"


def _text(x: Any) -> str:
    s = x if isinstance(x, str) else json.dumps(to_jsonable(x), ensure_ascii=False)
    return s.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[tuple[list[str], Mapping[str, Any]]], lead: list[str], keys: list[str] | None = None) -> list[str]:
    """Markdown table; ``rows`` are (leading cells, metrics)."""
    cols = [c for c in COLUMNS if keys is None or c[0] in keys]
    if keys is not None:
        cols.sort(key=lambda c: keys.index(c[0]))
    cols = [c for c in cols if any(_value(m, c[0]) is not None for _, m in rows)]
    header = lead + [c[1] for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(lead) + ["---:"] * len(cols)) + "|"]
    for cells, metrics in rows:
        values = [_cell(_value(metrics, key), kind) + _ci(metrics, key, kind) for key, _, kind in cols]
        lines.append("| " + " | ".join([_text(c) for c in cells] + values) + " |")
    return lines


def _bullets(d: Mapping[str, Any]) -> list[str]:
    return [f"- **{_text(k)}**: {_text(v)}" for k, v in d.items()]


def _is_metrics(d: Any) -> bool:
    return isinstance(d, Mapping) and any(k in d for k, _, _ in COLUMNS)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown text of :func:`write_report` (deterministic)."""
    lines = [f"# {report.get('title', 'Evaluation report')}", ""]
    for key, heading in (("model", "Model"), ("dataset", "Dataset")):
        if report.get(key):
            lines += [f"## {heading}", "", *_bullets(report[key]), ""]

    methods = report.get("methods") or {}
    if methods:
        lines += ["## Results", ""]
        lines += _table([([name], m) for name, m in methods.items()], ["method"])
        lines += [""]

    comparisons = report.get("comparisons") or {}
    if comparisons:
        main = report.get("main_method", "the model")
        lines += ["## Against the baselines", "", f"Paired on the same photos, `{main}`:", ""]
        lines += [f"- {c['text']}" for c in comparisons.values() if isinstance(c, Mapping) and "text" in c]
        lines += [""]

    calib = report.get("calibration") or {}
    if calib:
        lines += ["## Calibration", "", "| | raw head | calibrated |", "|---|---:|---:|",
                  f"| cell NLL | {_num(calib.get('nll_raw'), 'km')} | {_num(calib.get('nll'), 'km')} |",
                  f"| top-cell ECE | {_num(calib.get('ece_raw'), 'pct')} | {_num(calib.get('ece'), 'pct')} |", ""]
        for level in ("50", "90"):
            if f"coverage_{level}" in calib:
                lines.append(f"- the true location lies inside the {level}% radius for "
                             f"{_num(calib[f'coverage_{level}'], 'pct')} of photos "
                             f"({calib.get(f'zero_radius_{level}', 0)} radii of 0 km)")
        lines += [""]

    pooled = report.get("pooled") or {}
    if pooled:
        lines += ["## Pooled over all held-out places", ""]
        lines += _table([([name], m) for name, m in pooled.items()], ["method"]) + [""]

    cv = report.get("cv") or {}
    folds = report.get("folds") or []
    if cv:
        n_folds = f"{len(folds)} folds, " if folds else ""
        lines += ["## Cross-validation", "", f"Mean ± standard deviation over folds ({n_folds}ddof=0).", ""]
        lines += _table([([name], m) for name, m in cv.items()], ["method"])
        lines += [""]
    if folds:
        rows = []
        for i, fold in enumerate(folds):
            label = str(fold.get("fold", i))
            inner = fold.get("methods")
            source = inner if isinstance(inner, Mapping) else fold
            nested = {k: v for k, v in source.items() if _is_metrics(v)}
            if nested:
                rows += [([label, name], m) for name, m in nested.items()]
            else:
                rows.append(([label, MISSING], fold))
        lines += ["## Per fold", ""] + _table(rows, ["fold", "method"]) + [""]

    per_country = report.get("per_country") or {}
    if per_country:
        lines += ["## Per country", ""]
        first = next(iter(per_country.values()))
        if _is_metrics(first):
            lines += _table([([c], m) for c, m in per_country.items()], ["country"], COUNTRY_COLUMNS) + [""]
        else:
            for method, table in per_country.items():
                lines += [f"### {method}", ""]
                lines += _table([([c], m) for c, m in table.items()], ["country"], COUNTRY_COLUMNS) + [""]

    figures = report.get("figures") or {}
    if figures:
        lines += ["## Figures", ""]
        for name, path in figures.items():
            lines += [f"### {name}", "", f"![{name}]({Path(str(path)).as_posix()})", ""]

    notes = report.get("notes") or []
    if notes:
        lines += ["## Notes", "", *[f"- {MISSING if n is None else n}" for n in notes], ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` (the dict, JSON-converted) and ``report.md``; return both paths."""
    if not isinstance(report, Mapping):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = to_jsonable(report)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(data), encoding="utf-8")
    return json_path, md_path
