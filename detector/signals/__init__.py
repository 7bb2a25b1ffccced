"""Scoring signals: one module per source of evidence (see :mod:`detector.signals.base`).

=================  ===========================================================
``embedding``      whole frame / regions / silhouettes embedded and searched
``local_features`` descriptor vote + RANSAC verification (+ the mirrored listing)
``shape``          marks searched and checked by shape
``logo_area``      a product photo's logo area present in the listing or not
=================  ===========================================================
"""

from detector.signals.base import Evidence, Listing, Signal
from detector.signals.registry import DEFAULT_SIGNALS, available, build_signals, register

__all__ = ["DEFAULT_SIGNALS", "Evidence", "Listing", "Signal", "available", "build_signals", "register"]
