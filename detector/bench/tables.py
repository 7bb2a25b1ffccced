"""Markdown tables of a benchmark result (the dict :func:`detector.bench.runner.run_benchmark`
writes as JSON), so a saved result can be re-rendered without rerunning it.

Example:
    >>> import json
    >>> from detector.bench.tables import render_markdown
    >>> print(render_markdown(json.load(open("bench-out/bench-effnet-lite0-full.json"))))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detector.bench.dataset import GROUPS

# Row order of the per-class tables: the dataset's transformation classes, in its order.
CLASS_ORDER: tuple[str, ...] = GROUPS


def render_markdown(data: dict[str, Any]) -> str:
    """The whole report: header, quality per variant, variants side by side, speed and cost."""
    parts = [_header(data), _quality(data)]
    if data.get("speed", {}).get("enabled"):
        parts.append(_speed(data))
    parts.append(_cost(data))
    return "\n\n".join(p for p in parts if p) + "\n"


# ---------------------------------------------------------------------- sections
def _set_options(ds: dict[str, Any]) -> str:
    """Logos, backgrounds and product logo boxes of the set (results before them: nothing)."""
    if "collection" not in ds:
        return ""
    boxes = "with" if ds.get("logo_boxes") else "without"
    return (
        f"; logos {ds['collection']}, backgrounds {ds['backgrounds']}, "
        f"product references {boxes} logo boxes"
    )


def _header(data: dict[str, Any]) -> str:
    ds, model, machine = data["dataset"], data.get("model", {}), data["machine"]
    cfg = data["config"]
    weights = model.get("weights", "?")
    if weights.startswith("sha256:"):  # a file's hash: the prefix identifies it in a title
        weights = weights[:19] + "…"
    lines = [
        f"### Benchmark: {cfg['preset']} ({weights}), size {cfg['size']}",
        "",
        (
            f"- dataset: {ds['n_brands']} indexed brands, {ds['n_references']} references "
            f"(logos + product photos for {ds['product_photo_fraction']:.0%} of brands), "
            f"{ds['n_queries']} queries ({ds['queries_per_class']} per class), "
            f"{ds['n_unindexed']} unindexed brands, seed {ds['seed']}"
            + _set_options(ds)
        ),
        (
            f"- machine: {machine.get('cpu_model')}, {machine.get('cpu_affinity') or machine.get('cpu_count')} cores, "
            f"torch threads {model.get('torch_threads', machine.get('torch_threads'))}, device {model.get('device', cfg['device'])}, "
            f"load average {_load(machine.get('load_average_start'))} -> {_load(machine.get('load_average_end'))}"
        ),
        (
            f"- versions: torch {machine.get('torch')}, faiss {machine.get('faiss')}, "
            f"open_clip {machine.get('open_clip')}, timm {machine.get('timm')}"
        ),
    ]
    thresholds = data.get("thresholds")
    if thresholds:
        lines.append(
            f"- thresholds: `{thresholds['table'].get('version')}` ({thresholds['source']})"
        )
    lines.append(f"- wall time {_num(data.get('wall_seconds'), 0)} s, {data.get('created_at', '')}")
    return "\n".join(lines)


def _quality(data: dict[str, Any]) -> str:
    quality = data["quality"]
    if not quality.get("enabled"):
        return f"**Quality:** {quality.get('reason', 'not run')} (speed figures only)."
    target = _pct(quality["target_precision"])
    out = []
    # The JSON file is written with sorted keys: the run order lives in config.variants.
    order = [n for n in data["config"].get("variants", []) if n in quality["variants"]]
    variants = {n: quality["variants"][n] for n in order or sorted(quality["variants"])}
    random = data.get("model", {}).get("random_weights")
    for name, v in variants.items():
        rows = []
        for cls, m in _slices(v["metrics"]):
            d = m.get("decision") or {}
            pair = m["pair_at_target"]
            rows.append(
                [
                    cls,
                    str(m["n_queries"]),
                    _num(m["micro_ap"]),
                    _num(m["top1_accuracy"]),
                    _op(pair) if m["n_positive"] else "–",
                    _num(d.get("precision")),
                    _num(d.get("recall")),
                    _num(d.get("fpr")),
                ]
            )
        scoring = v.get("scoring", {})
        stages = ", ".join(
            f"{stage} {'on' if scoring.get(stage, {}).get('enabled') else 'off'}"
            for stage in ("regions", "verify", "silhouettes")
        )
        thresholds = f"; thresholds `{v['thresholds']}`" if v.get("thresholds") else ""
        title = (
            f"#### Quality, variant `{name}` ({stages}{thresholds}; {_rate(v['images_per_second'])} images/s"
            f"{', random weights: figures mean nothing' if random else ''})"
        )
        head = ["class", "n", "µAP", "R@1", f"R@P{target} (thr)", "P@thr", "R@thr", "FPR@thr"]
        out.append(title + "\n\n" + _table(head, rows))
    if len(variants) > 1:
        out.append(_side_by_side(variants))
    out.append(
        f"µAP and R@P{target}: all (query, brand) scores pooled (DISC21); R@1: share of branded "
        "queries whose best brand is right; P/R/FPR@thr: the flag decision at the thresholds "
        "(FPR over logo-free queries). '–': undefined for the class (no branded / no logo-free "
        "queries)."
    )
    return "\n\n".join(out)


def _side_by_side(variants: dict[str, Any]) -> str:
    names = list(variants)
    per_variant = {n: dict(_slices(v["metrics"])) for n, v in variants.items()}
    classes = list(per_variant[names[0]])
    head = ["class", "n"]
    for metric in ("µAP", "R@1", "R@thr", "FPR@thr"):
        head += [f"{metric} {n}" for n in names]
    rows = []
    for cls in classes:
        first = per_variant[names[0]][cls]
        row = [cls, str(first["n_queries"])]
        for key in ("micro_ap", "top1_accuracy", "recall", "fpr"):
            for n in names:
                m = per_variant[n].get(cls, {})
                value = (
                    (m.get("decision") or {}).get(key) if key in ("recall", "fpr") else m.get(key)
                )
                row.append(_num(value))
        rows.append(row)
    speed = ", ".join(f"`{n}` {_rate(variants[n]['images_per_second'])}" for n in names)
    return (
        "#### Variants side by side\n\n"
        + _table(head, rows)
        + f"\n\nimages/s (all queries): {speed}"
    )


def _speed(data: dict[str, Any]) -> str:
    speed = data["speed"]
    rows: list[list[str]] = []
    emb = speed.get("embedding", {})
    if emb.get("available"):
        rows += _embedding_rows(emb)
    else:
        rows.append(["embedding throughput", f"not measured: {emb.get('reason', '?')}"])
    search = speed.get("search", {})
    if search.get("batch_qps") is not None:
        rows.append(
            [
                f"search QPS, batch of {search['batch']} (k={search['k']}, {search['index_vectors']} vectors)",
                _rate(search["batch_qps"]),
            ]
        )
        lat = search["single_latency"]
        rows.append(
            [
                "search, single query: QPS / p50 / p99",
                f"{_rate(search['single_qps'])} / {_ms(lat['p50_ms'])} / {_ms(lat['p99_ms'])}",
            ]
        )
    for name, lat in speed.get("latency", {}).items():
        rows.append(
            [
                f"Detector.score latency `{name}`, p50 / p99 (n={lat['n']})",
                f"{_ms(lat['p50_ms'])} / {_ms(lat['p99_ms'])}",
            ]
        )
    for name, tp in speed.get("scoring_throughput", {}).items():
        share = tp.get("share_of_reference")
        rows.append(
            [
                f"scoring throughput `{name}` (n={tp['n']}, median of {tp.get('rounds', 1)} interleaved rounds)",
                f"{_rate(tp['images_per_second'])} images/s"
                + (f" ({100 * share:.1f} % of whole-image)" if share is not None else ""),
            ]
        )
    return "#### Speed\n\n" + _table(["figure", "value"], rows)


def _embedding_rows(emb: dict[str, Any]) -> list[list[str]]:
    """Rows of the embedding comparison measured by :mod:`detector.bench.speed`."""
    rows = []
    threads = emb.get("threads", {})
    for size, tp in emb.get("sizes", {}).items():
        rows.append(
            [
                f"embedding end to end, {size} JPEG: project / plain baseline (ratio)",
                (
                    f"{_rate(tp.get('project_ips'))} / {_rate(tp.get('baseline_ips'))} images/s "
                    f"({_num(tp.get('project_ratio'), 2)}x)"
                ),
            ]
        )
    lat = emb.get("latency")
    if lat:
        rows.append(
            [
                f"embedding one image, {lat.get('size')}: project / baseline p50",
                f"{_ms(lat.get('project_p50_ms'))} / {_ms(lat.get('baseline_p50_ms'))}",
            ]
        )
    acc = emb.get("accuracy")
    if acc:
        rows.append(
            [
                "embedding agreement with the baseline (cosine min / mean)",
                f"{_num(acc.get('cosine_min'), 5)} / {_num(acc.get('cosine_mean'), 5)}",
            ]
        )
    if threads:
        rows.append(
            [
                "embedding threads: project / baseline",
                f"{threads.get('project')} / {threads.get('baseline')}",
            ]
        )
    return rows


def _cost(data: dict[str, Any]) -> str:
    cost, index = data["cost"], data["index"]
    rows = [
        [
            "index build (references/s)",
            f"{_num(cost['index_build_seconds'], 1)} s ({_rate(index['references_per_second'])})",
        ],
        [
            "index bytes per reference: all files / vectors only (vectors per reference)",
            (
                f"{_num(cost['index_bytes_per_reference'], 0)} / {_num(index.get('vector_bytes_per_reference'), 0)} "
                f"({index['vectors_per_reference']})"
            ),
        ],
        ["peak RSS", f"{cost['peak_rss_bytes'] / 2**20:.0f} MiB"],
    ]
    return "#### Cost\n\n" + _table(["figure", "value"], rows)


# ---------------------------------------------------------------------- formatting
def _slices(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    by_group = metrics["by_group"]
    order = [g for g in CLASS_ORDER if g in by_group] + sorted(
        g for g in by_group if g not in CLASS_ORDER
    )
    return [(g, by_group[g]) for g in order] + [("overall", metrics["overall"])]


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{float(value):.{digits}f}"


def _rate(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _ms(value: Any) -> str:
    return "–" if value is None else f"{float(value):.3g} ms"


def _op(point: dict[str, Any]) -> str:
    if not point.get("met"):
        return "0 (unmet)" if point.get("recall") is not None else "–"
    return f"{_num(point['recall'])} ({_num(point['threshold'])})"


def _pct(value: float) -> str:
    return f"{value * 100:g}"


def _load(values: Any) -> str:
    return "?" if not values else "/".join(f"{v:.1f}" for v in values)
