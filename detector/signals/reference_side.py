"""What the signals store per reference at indexing time, gathered into one record.

The record is the reference's local features (:class:`~detector.features.LocalFeatures`,
stored as the index's side data for that reference), with the fields each built-in signal
declares (:meth:`~detector.signals.base.Signal.reference_fields`): a logo's appearance
thumbnail (local features), its canonical silhouette (shape), a product photo's logo box
(logo area). Every built-in signal fills its fields whatever the preset's own scoring uses,
so any profile can score the index.
"""

from __future__ import annotations

from dataclasses import replace

from detector.features import LocalFeatures
from detector.signals.base import ReferenceImage
from detector.signals.registry import BUILTIN
from detector.verify import VerifyConfig, reference_features


def reference_side_data(reference: ReferenceImage, config: VerifyConfig) -> LocalFeatures:
    """The reference's stored record (store ``.to_bytes()``).

    Raises:
        ValueError: A signal found a malformed attribute (e.g. ``logo_box``): this item fails.
    """
    stored = reference_features(reference.view, config)
    for signal in BUILTIN:
        fields = signal.reference_fields(reference, stored, config)
        if fields:
            stored = replace(stored, **fields)
    return stored
