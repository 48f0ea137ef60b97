"""Paired differences between two evaluation reports, with bootstrap confidence intervals over videos.

Means over 6-18 videos hide a per-video spread larger than most differences between models. Two models scored on
the same videos are compared video by video: for each metric, the differences ``this - other`` on the videos both
scored, their mean, and a 95 % percentile bootstrap interval of that mean (``RESAMPLES`` resamples of the videos with
replacement, numpy's generator seeded with ``SEED``: the same reports always give the same interval). An interval
that excludes 0 says the difference is larger than the spread of the videos explains; with fewer than
``MIN_PAIRED`` videos no interval is given.

Reports are comparable when they score the same task on the same dataset; other differences of protocol (the
alignment, the OPW flow, the evaluation settings) are listed with the comparison, since they change the figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bufferanytime.errors import InputError

RESAMPLES = 10_000
SEED = 0
CONFIDENCE = 0.95
MIN_PAIRED = 2
SKIPPED_KEYS = ("seconds", "seconds_per_frame", "scale", "shift", "opw_gt")  # not model figures, or the floor
PROTOCOL = ("align", "flow", "max_depth", "settings")  # compared, listed when they differ


def load_report(path: str | Path) -> dict:
    """An evaluation report: ``REPORT/report.json`` or the report folder. InputError (one line) when it cannot be
    read or is not an evaluation report."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no such report (pass a report folder written by 'bufferanytime eval', or its "
                         "report.json)") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{file}: not a readable report ({type(exc).__name__})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("sequences"), dict) or "task" not in report:
        raise InputError(f"{file}: not an evaluation report (no task or per-sequence results)")
    report.setdefault("source", str(file))
    return report


def check_comparable(task: str, dataset: str, other: dict) -> None:
    """InputError when ``other`` scores another task or dataset than the run (nothing is paired then)."""
    if other.get("task") != task or other.get("dataset") != dataset:
        raise InputError(f"{other.get('source', 'the other report')}: scores {other.get('task')} on "
                         f"{other.get('dataset')}, this evaluation {task} on {dataset}; reports compare only on the "
                         "same task and dataset")


def bootstrap_ci(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (resampling its entries with replacement)."""
    diffs = np.asarray(diffs, np.float64)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _figures(report: dict, label: str) -> dict[str, dict[str, float]]:
    """Per-sequence finite figures of one model: ``{sequence: {metric: value}}`` (unscored results left out)."""
    out = {}
    for name, entry in report["sequences"].items():
        metrics = entry.get("models", {}).get(label)
        if not metrics or metrics.get("error"):
            continue
        out[name] = {k: float(v) for k, v in metrics.items() if k not in SKIPPED_KEYS and isinstance(v, int | float)
                     and not isinstance(v, bool) and math.isfinite(v)}
    return out


def paired_differences(report: dict, other: dict, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Every model of ``report`` against every model of ``other`` on the videos both scored (module docstring)."""
    pairs = []
    for mine in (m["label"] for m in report["models"]):
        ours = _figures(report, mine)
        for theirs_label in (m["label"] for m in other.get("models", [])):
            theirs = _figures(other, theirs_label)
            common = sorted(set(ours) & set(theirs))
            pairs.append({"model": mine, "other_model": theirs_label, "sequences": len(common),
                          "metrics": _metric_differences(ours, theirs, common, resamples, seed)})
    return {
        "other": other.get("source"),
        "confidence": CONFIDENCE,
        "resamples": resamples,
        "seed": seed,
        "protocol_differences": [key for key in PROTOCOL if _protocol(report, key) != _protocol(other, key)],
        "pairs": pairs,
    }


def _protocol(report: dict, key: str):
    """A protocol entry of a report; of the settings, those that change the figures (not what is compared)."""
    value = report.get(key)
    if key == "settings" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "compare"}
    return value


def _metric_differences(ours: dict, theirs: dict, common: list[str], resamples: int, seed: int) -> dict:
    """Per metric, over the videos where both models have it (a metric some videos leave undefined, such as the
    error's OPW where no ground-truth pixel is valid, or AbsRel on moving objects where nothing moves, is compared
    on the others; ``sequences`` says on how many)."""
    out = {}
    for key in dict.fromkeys(k for name in common for k in ours[name]):
        names = [n for n in common if key in ours[n] and key in theirs[n]]
        if not names:
            continue
        mine = np.array([ours[n][key] for n in names])
        other = np.array([theirs[n][key] for n in names])
        diffs = mine - other
        ci = bootstrap_ci(diffs, resamples, seed) if len(diffs) >= MIN_PAIRED else None
        out[key] = {"this": float(mine.mean()), "other": float(other.mean()), "mean_diff": float(diffs.mean()),
                    "ci95": list(ci) if ci else None, "sequences": len(names),
                    "per_sequence": {n: float(d) for n, d in zip(names, diffs, strict=True)}}
    return out


def compare_lines(comparison: dict, columns: list[tuple[str, str, int]]) -> list[str]:
    """The report.md section: one table per pair of models, rows = metrics (``columns``: key, header, digits)."""
    lines = ["", "## Paired comparison", "",
             f"Against `{comparison['other']}`: mean over the videos both reports scored of (this - other), with a "
             f"{comparison['confidence']:.0%} percentile bootstrap interval over videos ({comparison['resamples']} "
             f"resamples, seed {comparison['seed']}). An interval that excludes 0 is marked *."]
    if comparison["protocol_differences"]:
        lines += ["", "**The reports differ in " + ", ".join(comparison["protocol_differences"]) + "**: the "
                  "figures were not computed the same way."]
    for pair in comparison["pairs"]:
        lines += ["", f"**{pair['model']}** vs **{pair['other_model']}** (other), {pair['sequences']} paired "
                  "video(s)", "", "| Metric | this | other | this - other | 95 % CI |", "|---|---:|---:|---:|---|"]
        for key, header, digits in columns:
            d = pair["metrics"].get(key)
            if d is None:
                continue
            ci = d["ci95"]
            shown = f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else "too few videos"
            star = " *" if ci and (ci[0] > 0 or ci[1] < 0) else ""
            if d.get("sequences", pair["sequences"]) != pair["sequences"]:
                header = f"{header} ({d['sequences']} videos)"
            lines.append(f"| {header} | {d['this']:.{digits}f} | {d['other']:.{digits}f} | "
                         f"{d['mean_diff']:+.{digits}f}{star} | {shown} |")
    return lines
