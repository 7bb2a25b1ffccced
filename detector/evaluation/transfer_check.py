"""Does a tuned table transfer? The same thresholds measured on a second labelled set (another
logo collection, other backgrounds), beside the figures on the set they were tuned on.

Thresholds tuned on one collection can mean something else on another: last round's table,
flagging no logo-free listing of its tuning set, flagged 19 % of another collection's. So
``counterfeit tune --transfer-eval DIR`` reports both and warns when precision or the
false-flag rate differ by more than a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detector.evaluation.decision_metrics import DecisionMetrics, evaluate_decisions
from detector.evaluation.scores import EvalScores
from detector.thresholds import Thresholds

DEFAULT_MARGIN = 0.02


@dataclass(frozen=True)
class TransferCheck:
    """A table's figures on the set it was tuned on and on another one.

    Attributes:
        name: The other set's name (e.g. its eval folder).
        in_sample: Query-level figures on the tuning set.
        other: The same table's figures on the other set.
        margin: Largest tolerated difference in precision and in false-flag rate.
    """

    name: str
    in_sample: DecisionMetrics
    other: DecisionMetrics
    margin: float = DEFAULT_MARGIN

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per figure that moved by more than the margin (NaN counts as moved)."""
        found = []
        for label, ours, theirs in (
            ("precision", self.in_sample.precision, self.other.precision),
            ("false-flag rate", self.in_sample.fpr, self.other.fpr),
        ):
            gap = abs(theirs - ours)
            if math.isnan(gap) or gap > self.margin:
                found.append(f"{label} does not transfer to {self.name}: {ours:.3f} in-sample, "
                             f"{theirs:.3f} there (margin {self.margin:.3f})")
        return tuple(found)

    def summary(self) -> str:
        i, o = self.in_sample, self.other
        lines = [
            f"{'':12s} {'precision':>9s} {'recall':>7s} {'FPR':>6s}",
            f"{'in-sample':12s} {i.precision:9.3f} {i.recall:7.3f} {i.fpr:6.3f}",
            f"{self.name[:12]:12s} {o.precision:9.3f} {o.recall:7.3f} {o.fpr:6.3f}",
        ]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def check_transfer(
    thresholds: Thresholds, tuned_on: EvalScores, other: EvalScores, *, name: str, margin: float = DEFAULT_MARGIN,
    n_boot: int = 0,
) -> TransferCheck:
    """Measure ``thresholds`` on the set they were tuned on and on ``other``.

    Example:
        >>> from detector.evaluation.synthetic import synthetic_scores
        >>> a, b = synthetic_scores(300, seed=0), synthetic_scores(300, seed=1)
        >>> check = check_transfer(Thresholds(default=0.5), a, b, name="seed1")
        >>> check.other.n_flagged > 0
        True
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return TransferCheck(
        name=name,
        in_sample=evaluate_decisions(tuned_on, thresholds, n_boot=n_boot, name="in-sample"),
        other=evaluate_decisions(other, thresholds, n_boot=n_boot, name=name),
        margin=margin,
    )
