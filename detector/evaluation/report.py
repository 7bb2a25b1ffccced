"""Evaluation report: metrics.json, summary.md and three PNG plots.

The ``*_data`` functions return the arrays behind each plot (for notebooks); the ``plot_*``
functions draw them with matplotlib's object API on the Agg canvas (no pyplot state, no display
needed); :func:`write_report` does everything. Matplotlib is imported only when plotting.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.evaluation.metrics import (
    EvalMetrics,
    PRCurve,
    SliceMetrics,
    compute_metrics,
    evaluate_decisions,
    micro_average_precision,
    pair_pr_curve,
    query_pr_curve,
)
from detector.evaluation.scores import EvalScores, EvaluationError, as_thresholds
from detector.thresholds import Thresholds
from index.atomic import atomic_write_bytes

_COLOURS = {"true": "tab:green", "wrong_brand": "tab:orange", "logo_free": "tab:red"}
_LABELS = {
    "true": "true match (right brand)",
    "wrong_brand": "false: wrong brand on a branded listing",
    "logo_free": "false: logo-free listing",
}


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out_dir: Path
    metrics_json: Path
    summary_md: Path
    pr_curve_png: Path
    score_hist_png: Path
    brand_thresholds_png: Path


@dataclass(frozen=True)
class PRPlotData:
    """Arrays behind pr_curve.png.

    Attributes:
        pair: Pair-level curve (the one µAP integrates).
        query: Query-level curve of a single global threshold (each query's top brand).
        operating_precision, operating_recall: Query-level point of the threshold table.
        target_precision: The precision line drawn.
        micro_ap: Pair-level µAP.
    """

    pair: PRCurve
    query: PRCurve
    operating_precision: float
    operating_recall: float
    target_precision: float
    micro_ap: float


@dataclass(frozen=True)
class BrandThresholdRow:
    """One brand of brand_thresholds.png: its support and the threshold per reference kind."""

    brand: str
    support: int
    values: dict[str, float]
    sources: dict[str, str]

    @property
    def overridden(self) -> bool:
        return any(s.startswith("brand:") for s in self.sources.values())


def pr_curve_data(
    scores: EvalScores, thresholds: Thresholds | float, *, target_precision: float = 0.9
) -> PRPlotData:
    """Both PR curves, and the operating point of ``thresholds``."""
    d = evaluate_decisions(scores, thresholds, n_boot=0)
    return PRPlotData(
        pair=pair_pr_curve(scores),
        query=query_pr_curve(scores),
        operating_precision=d.precision,
        operating_recall=d.recall,
        target_precision=target_precision,
        micro_ap=micro_average_precision(scores),
    )


def score_hist_data(scores: EvalScores) -> dict[str, np.ndarray]:
    """Prediction scores split into true matches, wrong-brand and logo-free false matches."""
    on_negative = ~scores.positive[scores.query_idx]
    return {
        "true": scores.score[scores.is_true],
        "wrong_brand": scores.score[~scores.is_true & ~on_negative],
        "logo_free": scores.score[on_negative],
    }


def brand_threshold_data(
    scores: EvalScores, thresholds: Thresholds | float, *, top_n: int = 30
) -> list[BrandThresholdRow]:
    """The ``top_n`` brands by labelled support (ties by name) with their applied thresholds."""
    table = as_thresholds(thresholds)
    support = scores.support()
    ranked = sorted(support, key=lambda b: (-support[b], b))[:top_n]
    rows = []
    for b in ranked:
        applied = {k: table.for_match(b, k) for k in table.keys_in_use()}
        rows.append(
            BrandThresholdRow(
                brand=b,
                support=support[b],
                values={k: a.value for k, a in applied.items()},
                sources={k: a.source for k, a in applied.items()},
            )
        )
    return rows


def plot_pr_curve(data: PRPlotData, path: str | Path, *, title: str = "Precision-recall") -> Path:
    """Draw both PR curves, the target precision and the operating point; write a PNG."""
    fig = _figure(7.0, 5.5)
    ax = fig.add_subplot()
    for curve, style, label in (
        (data.pair, "-", f"pairs pooled (µAP {_f(data.micro_ap)})"),
        (data.query, "--", "flags, one global threshold (top brand)"),
    ):
        if len(curve.thresholds):
            # start at recall 0 with the first point's precision, as a step curve reads
            r = np.concatenate([[0.0], curve.recall])
            p = np.concatenate([[curve.precision[0]], curve.precision])
            ax.step(r, p, where="post", linestyle=style, linewidth=1.6, label=label)
    if not len(data.pair.thresholds):
        ax.text(
            0.5, 0.5, "no predictions to plot", ha="center", va="center", transform=ax.transAxes
        )
    ax.axhline(
        data.target_precision,
        color="grey",
        linestyle=":",
        linewidth=1,
        label=f"target precision {data.target_precision:g}",
    )
    if math.isfinite(data.operating_precision):
        ax.plot(
            [data.operating_recall],
            [data.operating_precision],
            marker="*",
            markersize=16,
            color="tab:red",
            linestyle="none",
            label=f"thresholds table: P {data.operating_precision:.3f}, R {data.operating_recall:.3f}",
        )
    ax.set_xlim(0.0, 1.02)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Recall (share of branded listings found)")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_score_hist(
    data: dict[str, np.ndarray],
    thresholds: Thresholds | float,
    path: str | Path,
    *,
    title: str = "Score distributions",
) -> Path:
    """Overlaid score histograms (each normalised) with the default and per-kind thresholds."""
    table = as_thresholds(thresholds)
    fig = _figure(7.5, 5.0)
    ax = fig.add_subplot()
    present = [v for v in data.values() if len(v)]
    if present:
        allv = np.concatenate(present)
        lo, hi = float(allv.min()), float(allv.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 41)
        for key, values in data.items():
            if len(values):
                colour = _COLOURS.get(key)
                # light fill for the mass, a solid outline so overlapping classes stay readable
                ax.hist(
                    values, bins=bins, density=True, histtype="stepfilled", alpha=0.2, color=colour
                )
                ax.hist(
                    values,
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.6,
                    color=colour,
                    label=f"{_LABELS.get(key, key)} (n={len(values)})",
                )
    ax.axvline(
        table.default, color="black", linewidth=1.5, label=f"default threshold {table.default:.3f}"
    )
    for (kind, value), style in zip(sorted(table.kinds.items()), ("--", "-.", ":")):
        ax.axvline(
            value,
            color="dimgray",
            linestyle=style,
            linewidth=1.2,
            label=f"{kind} threshold {value:.3f}",
        )
    ax.set_xlabel(f"score ({table.score})")
    ax.set_ylabel("density (each histogram normalised)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_brand_thresholds(
    rows: list[BrandThresholdRow],
    thresholds: Thresholds | float,
    path: str | Path,
    *,
    title: str = "Per-brand thresholds",
) -> Path:
    """Dot chart: each brand's threshold per reference kind; own override vs inherited."""
    table = as_thresholds(thresholds)
    fig = _figure(9.0, 1.6 + 0.32 * max(len(rows), 3))
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no labelled brands", ha="center", va="center", transform=ax.transAxes)
    keys = table.keys_in_use()
    markers = dict(zip(keys, ("o", "s", "^", "D", "v", "P")))
    y = np.arange(len(rows))[::-1]  # largest support on top
    for kind in keys:
        for own in (True, False):
            pts = [
                (r.values[kind], yy)
                for r, yy in zip(rows, y)
                if r.sources[kind].startswith("brand:") == own
            ]
            if pts:
                xs, ys = zip(*pts)
                offset = 0.12 if kind == keys[0] else -0.12
                ax.scatter(
                    xs,
                    np.array(ys) + offset,
                    marker=markers.get(kind, "o"),
                    s=36,
                    color="tab:blue" if own else "lightgray",
                    edgecolors="tab:blue" if own else "gray",
                    label=f"{kind}: {'brand override' if own else 'inherited (kind/default)'}",
                )
    ax.axvline(
        table.default,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"default {table.default:.3f}",
    )
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r.brand} (n={r.support})" for r in rows], fontsize=8)
    ax.set_xlabel(f"threshold ({table.score} score)")
    ax.set_ylabel("brand (labelled positives)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    if rows:  # outside the axes: points can sit anywhere
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0.0)
    return _save(fig, path)


def write_report(
    out_dir: str | Path,
    scores: EvalScores,
    thresholds: Thresholds | float,
    *,
    title: str,
    target_precision: float = 0.9,
    top_n_brands: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    metrics: EvalMetrics | None = None,
) -> ReportFiles:
    """Compute every metric and write metrics.json, summary.md and the three plots.

    Args:
        out_dir: Folder to write into (created; existing report files are replaced atomically).
        scores: Labelled predictions.
        thresholds: Table the decision figures and operating point use (or one global value).
        title: Report heading.
        target_precision: Precision for the R@P figures (0.9 = R@P90).
        top_n_brands: Brands listed in summary.md and the threshold chart (by support).
        n_boot: Bootstrap replicates for intervals.
        seed: Bootstrap seed.
        metrics: Precomputed metrics for these scores and thresholds (skips recomputing).

    Returns:
        ReportFiles with every path written.

    Raises:
        EvaluationError: matplotlib missing (install the ``eval`` extra) or a bad argument.

    Example:
        >>> files = write_report("reports/run1", scores, load_thresholds("t.json"),  # doctest: +SKIP
        ...                      title="EffNet-Lite0, val split")
    """
    table = as_thresholds(thresholds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        metrics = compute_metrics(
            scores, table, target_precision=target_precision, n_boot=n_boot, seed=seed
        )
    files = ReportFiles(
        out_dir=out,
        metrics_json=out / "metrics.json",
        summary_md=out / "summary.md",
        pr_curve_png=out / "pr_curve.png",
        score_hist_png=out / "score_hist.png",
        brand_thresholds_png=out / "brand_thresholds.png",
    )
    document = {
        "title": title,
        "dataset": scores.describe(),
        "thresholds": table.to_dict(),
        "metrics": metrics.to_dict(),
    }
    _atomic_write(
        files.metrics_json, (json.dumps(document, indent=2, sort_keys=False) + "\n").encode()
    )
    _atomic_write(
        files.summary_md,
        summary_markdown(scores, table, metrics, title=title, top_n=top_n_brands).encode(),
    )
    plot_pr_curve(
        pr_curve_data(scores, table, target_precision=target_precision),
        files.pr_curve_png,
        title=f"{title}: precision-recall",
    )
    plot_score_hist(score_hist_data(scores), table, files.score_hist_png, title=f"{title}: scores")
    plot_brand_thresholds(
        brand_threshold_data(scores, table, top_n=top_n_brands),
        table,
        files.brand_thresholds_png,
        title=f"{title}: per-brand thresholds",
    )
    return files


def summary_markdown(
    scores: EvalScores, thresholds: Thresholds, metrics: EvalMetrics, *, title: str, top_n: int = 20
) -> str:
    """The text of summary.md: counts, overall/group/kind table, top brands table, definitions."""
    d = scores.describe()
    keys = thresholds.keys_in_use()
    pct = round(metrics.confidence * 100)
    tp = f"{metrics.target_precision:g}"
    lines = [
        f"# {title}",
        "",
        (
            f"- Queries: {d['n_queries']} ({d['n_positive']} with a brand, {d['n_logo_free']} logo-free); "
            f"predictions: {d['n_predictions']}; labelled brands: {d['n_brands_labelled']}"
        ),
        (
            f"- Thresholds: version `{thresholds.version}`, score `{thresholds.score}`, default "
            f"{thresholds.default:.4f}, {len(thresholds.kinds)} kind and {len(thresholds.brands)} brand overrides"
        ),
        f"- Intervals: {pct}% bootstrap over queries, {metrics.n_boot} replicates, seed {metrics.seed}",
    ]
    if thresholds.score != scores.score_name:
        lines.append(
            f"- **Warning**: thresholds are for the `{thresholds.score}` score but these scores are "
            f"`{scores.score_name}`"
        )
    lines += [
        "",
        "## At the thresholds",
        "",
        (
            f"| slice | queries | with brand | logo-free | flagged | precision [{pct}% CI] | recall [{pct}% CI] "
            f"| F1 | FPR | µAP | R@P{_pct(tp)} pairs (thr) | R@P{_pct(tp)} flags (thr) | top-1 | AUC |"
        ),
        "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    slices = [metrics.overall]
    slices += [metrics.by_group[g] for g in sorted(metrics.by_group)]
    slices += [metrics.by_kind[k] for k in sorted(metrics.by_kind)]
    for s in slices:
        lines.append(_slice_row(s))
    support = scores.support()
    ranked = sorted(support, key=lambda b: (-support[b], b))[:top_n]
    lines += [
        "",
        f"## Per brand (top {len(ranked)} of {len(support)} by support)",
        "",
        (
            f"| brand | support | flagged | threshold {' / '.join(keys)} | source | precision [{pct}% CI] "
            f"| recall [{pct}% CI] | wrong-brand FP | logo-free FP | µAP | top-1 |"
        ),
        "|---|---:|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    for b in ranked:
        m = metrics.by_brand[b]
        dm = m.decision
        thr = " / ".join(f"{m.thresholds[k]['value']:.3f}" for k in keys if k in m.thresholds)
        sources = sorted({m.thresholds[k]["source"] for k in m.thresholds})
        lines.append(
            f"| {b} | {m.n_positive} | {dm.n_flagged if dm else '-'} | {thr} | {', '.join(sources)} "
            f"| {_ci(dm.precision, dm.precision_ci) if dm else '-'} | {_ci(dm.recall, dm.recall_ci) if dm else '-'} "
            f"| {dm.fp_wrong_brand if dm else '-'} | {dm.fp_logo_free if dm else '-'} "
            f"| {_f(m.micro_ap)} | {_f(m.top1_accuracy)} |"
        )
    lines += ["", "## Definitions", "", DEFINITIONS_MD]
    return "\n".join(lines) + "\n"


DEFINITIONS_MD = """\
- **Flag**: a listing is flagged when a brand's best score reaches the threshold for that brand
  and the matched reference's kind; the flagged brand is the highest-scoring passing one (equal
  scores: worst case). It is a true positive only if that brand is the listing's true brand.
- **Precision** = right flags / flags. **Recall** = right flags / listings with a true brand.
  **FPR** = logo-free listings flagged (any brand) / logo-free listings. Per brand: flags as that
  brand, that brand's listings, and logo-free listings flagged as that brand.
- **µAP** (pairs, as DISC21): all (listing, brand) scores pooled, sorted descending, equal scores
  false-first; Σ Δrecall × precision, recall over all listings with a true brand.
- **R@P90 (thr)**: highest recall with precision >= 0.9 and the score threshold giving it,
  for pooled pairs and for flags under one global threshold; "-" when unreachable.
- **top-1**: share of branded listings whose highest-scoring brand is right (no threshold).
- **AUC**: ROC AUC of each listing's top score, branded vs logo-free listings (detection only).
- Intervals are bootstrap percentiles over listings; a wide interval means too few examples."""


# ---- helpers -------------------------------------------------------------------------------


def _slice_row(s: SliceMetrics) -> str:
    dm = s.decision
    return (
        f"| {s.name} | {s.n_queries} | {s.n_positive} | {s.n_logo_free} | {dm.n_flagged if dm else '-'} "
        f"| {_ci(dm.precision, dm.precision_ci) if dm else '-'} | {_ci(dm.recall, dm.recall_ci) if dm else '-'} "
        f"| {_f(dm.f1) if dm else '-'} | {_f(dm.fpr) if dm else '-'} | {_f(s.micro_ap)} "
        f"| {_op(s.pair_at_target)} | {_op(s.query_at_target)} | {_f(s.top1_accuracy)} | {_f(s.roc_auc)} |"
    )


def _op(p: Any) -> str:
    return f"{p.recall:.3f} ({p.threshold:.3f})" if p.met and p.threshold is not None else "-"


def _ci(value: float, ci: Any) -> str:
    if not math.isfinite(value):
        return "-"
    if not (math.isfinite(ci.low) and math.isfinite(ci.high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{ci.low:.2f}, {ci.high:.2f}]"


def _f(x: float) -> str:
    return f"{x:.3f}" if x is not None and math.isfinite(x) else "-"


def _pct(target: str) -> str:
    return f"{float(target) * 100:g}"


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise EvaluationError(
            "plots need matplotlib: pip install 'counterfeit-detector[eval]'"
        ) from e
    # a bare Figure renders through the Agg canvas on savefig: no pyplot, no global backend
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    _atomic_write(path, buf.getvalue())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
