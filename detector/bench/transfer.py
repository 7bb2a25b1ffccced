"""How thresholds transfer between logo collections: tune on one bench set, report on the others.

Input: the per-query scores of one scoring variant on several bench sets (one per logo
collection or background kind), as ``counterfeit bench --no-speed`` saves them
(``OUT/scores-<preset>-<size>[-<set>]/<variant>.jsonl``) or ``counterfeit eval`` does
(``DIR/scores.jsonl``). One table is tuned on one set (``tune_on``, the same procedure and
constraints as ``counterfeit tune``) or read from a file, then applied unchanged to every set.

Per set it reports precision and recall at that table, the false-flag rate on listings that show
no indexed brand (``neg_unindexed`` + ``neg_nologo``, and each of them), and per class the
rank-1 recall (R@1: the true brand ranks first, no threshold) and the recall at the table. A
tuned table names brands of the set it was tuned on only: on another set every brand falls back
to the kind and default entries, which is what transfer measures.

``scripts/transfer.py`` is the command line (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.bench.labels import GROUPS, NEGATIVE_GROUPS
from detector.errors import ConfigError, DetectorError
from detector.evaluation.decision_metrics import evaluate_decisions
from detector.evaluation.held_out_brands import with_held_out_brands
from detector.evaluation.ranking_metrics import top1_accuracy
from detector.evaluation.scores import EvalScores
from detector.evaluation.tuning import TuningResult, tune_thresholds
from detector.thresholds import Thresholds, load_thresholds, save_thresholds


@dataclass(frozen=True)
class GroupFigures:
    """One class of one set.

    Attributes:
        n: Listings of the class.
        rank1: Share of them whose top brand is the true one (NaN for negative classes).
        recall: Share flagged as the true brand at the table (NaN for negative classes).
        flagged: Share flagged as any brand (for negative classes: the false-flag rate).
    """

    n: int
    rank1: float
    recall: float
    flagged: float


@dataclass(frozen=True)
class SetFigures:
    """A table's outcome on one set.

    Attributes:
        name: The set's name (e.g. the logo collection).
        tuned_on: The table was tuned on this set (its figures are in-sample).
        n_queries, n_positive, n_logo_free: Listings, with an indexed brand, without one.
        precision, recall: Query level (a flag counts when it names the true brand).
        false_flag_rate: Share of the listings with no indexed brand that are flagged.
        false_flags: How many of them are flagged.
        rank1: R@1 over the listings with an indexed brand.
        by_group: Per class (:data:`detector.bench.labels.GROUPS` order, those present).
    """

    name: str
    tuned_on: bool
    n_queries: int
    n_positive: int
    n_logo_free: int
    precision: float
    recall: float
    false_flag_rate: float
    false_flags: int
    rank1: float
    by_group: dict[str, GroupFigures]


@dataclass(frozen=True)
class TransferResult:
    """One threshold table on every set.

    Attributes:
        thresholds: The table applied to every set.
        source: Where it came from (``tuned on <set>: ...`` or the file).
        tuning: The tuning outcome when tuned here (its ``met``, notes), else None.
        sets: Figures per set, in input order.
    """

    thresholds: Thresholds
    source: str
    tuning: TuningResult | None
    sets: tuple[SetFigures, ...]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "source": self.source,
                "thresholds": self.thresholds.to_dict(),
                "tuning_met": None if self.tuning is None else self.tuning.met,
                "tuning_notes": [] if self.tuning is None else list(self.tuning.notes),
                "sets": [asdict(s) for s in self.sets],
            }
        )

    def markdown(self) -> str:
        return render_markdown(self)


def evaluate_set(
    name: str, scores: EvalScores, thresholds: Thresholds, *, tuned_on: bool = False
) -> SetFigures:
    """The figures of ``thresholds`` on one set's scores (no bootstrap)."""
    decisions = scores.decide(thresholds)
    overall = evaluate_decisions(scores, thresholds, n_boot=0)
    negative = ~scores.positive
    by_group: dict[str, GroupFigures] = {}
    present = {q.group for q in scores.queries}
    for group in [*GROUPS, *sorted(g for g in present if g is not None and g not in GROUPS)]:
        mask = np.array([q.group == group for q in scores.queries], dtype=bool)
        n = int(mask.sum())
        if n == 0:
            continue
        part = scores.subset(mask)
        has_positives = bool(part.positive.any())
        by_group[group] = GroupFigures(
            n=n,
            rank1=top1_accuracy(part) if has_positives else math.nan,
            recall=float(decisions.correct[mask].sum() / part.positive.sum())
            if has_positives
            else math.nan,
            flagged=float(decisions.flagged[mask].mean()),
        )
    n_logo_free = int(negative.sum())
    false_flags = int((decisions.flagged & negative).sum())
    return SetFigures(
        name=name,
        tuned_on=tuned_on,
        n_queries=scores.n_queries,
        n_positive=int(scores.positive.sum()),
        n_logo_free=n_logo_free,
        precision=overall.precision,
        recall=overall.recall,
        false_flag_rate=false_flags / n_logo_free if n_logo_free else math.nan,
        false_flags=false_flags,
        rank1=top1_accuracy(scores),
        by_group=by_group,
    )


def transfer(
    sets: Mapping[str, EvalScores],
    *,
    tune_on: str | None = None,
    thresholds: Thresholds | None = None,
    thresholds_source: str = "file",
    target_precision: float | None = 0.95,
    max_fpr: float | None = None,
    min_support: int = 20,
    held_out_brands: bool = False,
) -> TransferResult:
    """Tune on ``tune_on`` (or take ``thresholds``) and evaluate the table on every set.

    Args:
        sets: Scores per set name, in report order.
        tune_on: The set to tune on (exactly one of ``tune_on`` and ``thresholds``).
        thresholds: A table to evaluate as it is.
        thresholds_source: How to name ``thresholds`` in the report.
        target_precision, max_fpr, min_support: The tuning constraints (``counterfeit tune``).
        held_out_brands: Tune with the held-out-brand negatives of the tuning set added
            (:mod:`detector.evaluation.held_out_brands`); the report shows real listings only.

    Raises:
        ConfigError: Neither or both of ``tune_on``/``thresholds``, an unknown set, no sets.
    """
    if not sets:
        raise ConfigError("no score sets given")
    if (tune_on is None) == (thresholds is None):
        raise ConfigError("give exactly one of tune_on and thresholds")
    tuning = None
    if tune_on is not None:
        if tune_on not in sets:
            raise ConfigError(f"--tune-on {tune_on!r} is not one of the sets {list(sets)}")
        tuning_scores = sets[tune_on]
        if held_out_brands:
            tuning_scores = with_held_out_brands(tuning_scores)
        tuning = tune_thresholds(
            tuning_scores,
            target_precision=target_precision,
            max_fpr=max_fpr,
            min_support=min_support,
            version=f"transfer-tuned-on-{tune_on}",
            n_boot=0,
        )
        thresholds = tuning.thresholds
        bounds = []
        if target_precision is not None:
            bounds.append(f"precision >= {target_precision:g}")
        if max_fpr is not None:
            bounds.append(f"FPR <= {max_fpr:g}")
        if held_out_brands:
            bounds.append("with held-out-brand negatives")
        source = (
            f"tuned on {tune_on} ({', '.join(bounds)}, min support {min_support}; "
            f"{'met' if tuning.met else 'NOT met'})"
        )
    else:
        source = thresholds_source
    assert thresholds is not None
    figures = tuple(
        evaluate_set(name, scores, thresholds, tuned_on=name == tune_on)
        for name, scores in sets.items()
    )
    return TransferResult(thresholds, source, tuning, figures)


# ---------------------------------------------------------------------- reading scores
def load_set_scores(path: str | Path, *, variant: str = "default") -> EvalScores:
    """One set's scores: a ``.jsonl`` file, an eval folder (``scores.jsonl``), a bench scores
    folder (``<variant>.jsonl``) or a bench output folder with one ``scores-*`` folder.

    Raises:
        ConfigError: Nothing (or more than one candidate) found there.
    """
    from detector.evaluation.runner import load_scores

    path = Path(path)
    candidates: list[Path]
    if path.is_file():
        candidates = [path]
    elif path.is_dir():
        candidates = [
            p for p in (path / "scores.jsonl", path / f"{variant}.jsonl") if p.is_file()
        ] or sorted(path.glob(f"scores-*/{variant}.jsonl"))
    else:
        raise ConfigError(f"{path}: no such file or folder")
    if len(candidates) != 1:
        found = ", ".join(str(c) for c in candidates) or "none"
        raise ConfigError(
            f"{path}: expected one scores file (scores.jsonl, {variant}.jsonl or "
            f"scores-*/{variant}.jsonl), found {found}; name the file"
        )
    try:
        return load_scores(candidates[0])
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{candidates[0]} is not a scores file: {e}") from e


# ---------------------------------------------------------------------- markdown
def transfer_matrix(
    sets: Mapping[str, EvalScores],
    *,
    target_precision: float | None = 0.95,
    max_fpr: float | None = None,
    min_support: int = 20,
    held_out_brands: bool = False,
) -> str:
    """Tune on each set in turn and report the table on every set: one markdown row per
    tuning set, each cell "false flags / logo-free listings · recall", and the worst
    false-flag rate on the *other* sets (what a table tuned on one collection does elsewhere)."""
    names = list(sets)
    lines = [
        "| tuned on ↓ · false flags / logo-free · recall at the table on → | "
        + " | ".join(names) + " | worst other |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for name in names:
        result = transfer(
            sets, tune_on=name, target_precision=target_precision, max_fpr=max_fpr,
            min_support=min_support, held_out_brands=held_out_brands,
        )  # fmt: skip
        cells = [f"{f.false_flags}/{f.n_logo_free} · {f.recall:.3f}" for f in result.sets]
        worst = max((f.false_flag_rate for f in result.sets if f.name != name), default=math.nan)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {worst:.1%} |")
    return "\n".join(lines) + "\n"


def render_markdown(result: TransferResult) -> str:
    """The transfer table: one column per set, figures as rows."""
    sets = result.sets
    header = ["figure", *[f"{s.name} (tuned here)" if s.tuned_on else s.name for s in sets]]
    rows: list[list[str]] = [
        [
            "listings (with an indexed brand / without)",
            *[f"{s.n_queries} ({s.n_positive} / {s.n_logo_free})" for s in sets],
        ],
        ["precision @thr", *[_f(s.precision) for s in sets]],
        ["recall @thr", *[_f(s.recall) for s in sets]],
        [
            "false-flag rate, no indexed brand",
            *[f"{_f(s.false_flag_rate)} ({s.false_flags}/{s.n_logo_free})" for s in sets],
        ],
    ]
    for group in NEGATIVE_GROUPS:
        rows.append([f"— flagged: {group}", *[_f(_get(s, group, "flagged")) for s in sets]])
    rows.append(["R@1, all with an indexed brand", *[_f(s.rank1) for s in sets]])
    groups = [g for g in GROUPS if g not in NEGATIVE_GROUPS]
    extra = sorted({g for s in sets for g in s.by_group if g not in GROUPS and g is not None})
    for group in [*groups, *extra]:
        if not any(group in s.by_group for s in sets):
            continue
        rows.append(
            [
                f"{group}: R@1 / recall @thr",
                *[f"{_f(_get(s, group, 'rank1'))} / {_f(_get(s, group, 'recall'))}" for s in sets],
            ]
        )
    lines = [
        f"Thresholds: `{result.thresholds.version}` — {result.source}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    if result.tuning is not None and result.tuning.notes:
        lines += ["", *(f"- tuning note: {n}" for n in result.tuning.notes)]
    return "\n".join(lines) + "\n"


def _get(s: SetFigures, group: str, field: str) -> float:
    figures = s.by_group.get(group)
    return math.nan if figures is None else getattr(figures, field)


def _f(value: float) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------- command line
def _named_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/transfer.py NAME=SCORES ... (--tune-on NAME | --thresholds FILE)``."""
    parser = argparse.ArgumentParser(
        prog="transfer", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "sets",
        nargs="+",
        type=_named_path,
        metavar="NAME=PATH",
        help="a set's scores: a scores .jsonl, an eval folder, a bench scores folder or a bench "
        "--out folder (e.g. crypto=bench-crypto)",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tune-on", metavar="NAME", help="tune the thresholds on this set")
    which.add_argument("--thresholds", metavar="FILE", help="evaluate this table as it is")
    which.add_argument(
        "--tune-on-each",
        action="store_true",
        help="tune on each set in turn: one row per tuning set (false flags and recall on every set)",
    )
    parser.add_argument("--variant", default="default", help="scoring variant (default: default)")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument(
        "--max-fpr", type=float, default=None, help="max share of logo-free listings flagged"
    )
    parser.add_argument("--min-support", type=int, default=20)
    parser.add_argument(
        "--held-out-brands",
        action="store_true",
        help="with --tune-on: also tune on each branded listing scored without its brand "
        "(a listing of a brand that is not indexed)",
    )
    parser.add_argument("--out", metavar="FILE", help="also write the markdown table here")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON here")
    parser.add_argument(
        "--save-thresholds", metavar="FILE", help="write the tuned table (with --tune-on)"
    )
    args = parser.parse_args(argv)
    names = [name for name, _ in args.sets]
    if len(set(names)) != len(names):
        parser.error(f"set names must differ: {names}")
    try:
        sets = {name: load_set_scores(path, variant=args.variant) for name, path in args.sets}
        result: TransferResult | None = None  # the matrix has one table per row, no single result
        if args.tune_on_each:
            markdown = transfer_matrix(
                sets, target_precision=args.target_precision, max_fpr=args.max_fpr,
                min_support=args.min_support, held_out_brands=args.held_out_brands,
            )  # fmt: skip
        else:
            table = load_thresholds(args.thresholds) if args.thresholds else None
            result = transfer(
                sets,
                tune_on=args.tune_on,
                thresholds=table,
                thresholds_source=f"from {args.thresholds}",
                target_precision=args.target_precision,
                max_fpr=args.max_fpr,
                min_support=args.min_support,
                held_out_brands=args.held_out_brands,
            )
            markdown = result.markdown()
        if args.out:
            Path(args.out).write_text(markdown, encoding="utf-8")
        if args.json and result is not None:
            Path(args.json).write_text(
                json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8"
            )
        if args.save_thresholds and result is not None and result.tuning is not None:
            save_thresholds(result.thresholds, args.save_thresholds)
    except DetectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown, end="")
    return 0
