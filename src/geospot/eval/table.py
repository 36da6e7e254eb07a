"""A compact console table of a report's methods (stdout of `geospot eval` / `cv`)."""
from __future__ import annotations

from geospot.eval.report import COLUMNS as REPORT_COLUMNS

# The report's columns (same keys and number kinds), with headers short enough for a terminal.
_SHORT = {"median_km": "median km", "mean_km": "mean km", "geoscore": "GeoScore", "top1": "cell@1",
          "top5": "cell@5", "country_acc": "country", "country_acc_geonames": "country(GN)"}
COLUMNS = [(key, _SHORT.get(key, header.replace("acc", "").replace(" ", "")), kind)
           for key, header, kind in REPORT_COLUMNS if key != "n"]


def _fmt(value, kind: str, std=None) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        text = f"{100 * value:.1f}"
        return text + (f"±{100 * std:.1f}" if std is not None else "")
    if kind == "km":
        text = f"{value:.0f}" if value >= 10 else f"{value:.1f}"
        return text + (f"±{std:.0f}" if std is not None else "")
    return f"{value:.0f}" + (f"±{std:.0f}" if std is not None else "")


def _with_ci(text: str, metrics: dict, key: str, kind: str) -> str:
    ci = metrics.get("ci") or {}
    if key != "geoscore" or key not in ci:
        return text
    return f"{text} [{_fmt(ci[key][0], kind)}-{_fmt(ci[key][1], kind)}]"


def format_table(report: dict) -> str:
    """Methods as rows; mean±std over folds when the report is a cross-validation."""
    methods = report.get("methods", {})
    cv = report.get("cv")
    cols = [c for c in COLUMNS if any(c[0] in m for m in methods.values())]
    rows = []
    for name, metrics in methods.items():
        cells = []
        for key, _, kind in cols:
            if cv and name in cv and key in cv[name]:
                cells.append(_fmt(cv[name][key]["mean"], kind, cv[name][key]["std"]))
            else:
                cells.append(_with_ci(_fmt(metrics.get(key), kind), metrics, key, kind))
        rows.append([name] + cells)
    header = ["method"] + [c[1] for c in cols]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = [report.get("title", "")]
    ds = report.get("dataset", {})
    if ds:
        lines.append(f"{ds.get('n_places', '?')} places, {ds.get('n_images', '?')} images"
                     + (f", {ds['failed_images']} images failed" if ds.get("failed_images") else ""))
    lines.append("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    for r in rows:
        lines.append("  ".join(str(v).ljust(widths[0]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(r)))
    return "\n".join(lines)


def format_folds(report: dict) -> str:
    """One row per held-out fold (e.g. per collection): the main method against the medoid,
    with the coverage of its radii; then the paired comparisons over all folds."""
    main = report.get("main_method")
    folds = report.get("folds") or []
    if not main or not folds:
        return ""
    header = ["held out", "places", "GeoScore [95% CI]", "medoid", "recipe", "median km", "cov50", "cov90"]
    rows = []
    for f in folds:
        m = f["methods"].get(main, {})
        ci = (m.get("ci") or {}).get("geoscore", [float("nan")] * 2)
        base = f["methods"].get("baseline: training medoid", {})
        rec = f["methods"].get("baseline: article recipe (CE, top cell)", {})
        cal = f.get("calibration") or {}
        rows.append([str(f["fold"]), str(f["n_test_places"]), f"{m.get('geoscore', float('nan')):.0f} [{ci[0]:.0f}-{ci[1]:.0f}]",
                     f"{base.get('geoscore', float('nan')):.0f}", f"{rec.get('geoscore', float('nan')):.0f}",
                     f"{m.get('median_km', float('nan')):.0f}",
                     f"{100 * cal.get('coverage_50', float('nan')):.0f}%", f"{100 * cal.get('coverage_90', float('nan')):.0f}%"])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = [f"per fold ({main}):", "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))]
    lines += ["  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(r)) for r in rows]
    for c in (report.get("comparisons") or {}).values():
        lines.append("pooled: " + c["text"])
    return "\n".join(lines)
