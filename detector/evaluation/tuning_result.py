"""What threshold tuning returns: the table, its expected figures, each slot's decision, a summary."""

from __future__ import annotations

import math
from dataclasses import dataclass

from detector.evaluation.decision_metrics import DecisionMetrics
from detector.evaluation.pr_curves import OperatingPoint
from detector.thresholds import Thresholds


@dataclass(frozen=True)
class SlotResult:
    """What tuning decided for one slot of the table.

    Attributes:
        slot: "default", "kind:<k>" or "brand:<b>".
        support: Labelled positives available to this slot.
        status: "set" (in the table), "inherited" (too little support or target unreachable on
            its own data) or "dropped" (reachable alone, but broke the assembled table).
        threshold: The slot's own threshold (for "inherited", None).
        point: The slot's operating point on its sub-problem (best achievable when unmet).
        reason: One line for humans.
    """

    slot: str
    support: int
    status: str
    threshold: float | None
    point: OperatingPoint | None
    reason: str


@dataclass(frozen=True)
class TuningResult:
    """Tuned table and what it is expected to do on the data it was tuned on.

    Attributes:
        thresholds: The table (``save_thresholds`` writes it).
        met: True when the assembled table meets every constraint on the data.
        target_precision, max_fpr: The constraints asked for.
        expected: Query-level precision/recall/F1/FPR of the table on the data (with intervals).
        global_only: The same for the global threshold alone, to see what the overrides changed.
        best_achievable: When the global target is unmet: the global point closest to it.
        slots: Every slot considered, in order default, kinds, brands.
        notes: Human-readable warnings (unmet targets, dropped overrides).
    """

    thresholds: Thresholds
    met: bool
    target_precision: float | None
    max_fpr: float | None
    expected: DecisionMetrics
    global_only: DecisionMetrics
    best_achievable: OperatingPoint | None
    slots: tuple[SlotResult, ...]
    notes: tuple[str, ...]

    def summary(self) -> str:
        """A few lines for a terminal: met or not, expected figures, overrides, notes."""
        e = self.expected
        head = "target met" if self.met else "TARGET NOT MET"
        lines = [
            (
                f"{head}: precision {_fmt(e.precision)} (target {_fmt(self.target_precision)}), "
                f"recall {_fmt(e.recall)}, FPR {_fmt(e.fpr)} (max {_fmt(self.max_fpr)}), "
                f"default threshold {self.thresholds.default:.4f}"
            ),
            (
                f"overrides: {len(self.thresholds.kinds)} kinds, {len(self.thresholds.brands)} brands "
                f"(global threshold alone: precision {_fmt(self.global_only.precision)}, "
                f"recall {_fmt(self.global_only.recall)}, FPR {_fmt(self.global_only.fpr)})"
            ),
        ]
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class HoldoutResult:
    """Thresholds tuned on one part and measured on another.

    Attributes:
        tuning: The tuning on the tune part (``tuning.expected`` = figures on that part).
        test: Query-level figures of the same table on the test part.
        n_tune, n_test: Queries in each part.
    """

    tuning: TuningResult
    test: DecisionMetrics
    n_tune: int
    n_test: int


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
