"""``--factory auto``: pick a new index's FAISS factory from the build's size and a memory budget.

The number of vectors is estimated before anything is embedded: each collected reference
counts :func:`detector.reference_prep.views_per_reference` views for its kind, an upper bound
(a logo whose silhouette cannot be made gives one view fewer; images that fail to load count).
The choice itself is :func:`index.factory_choice.choose_factory`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from detector.errors import ConfigError
from detector.reference_manifest import ReferenceItem
from detector.reference_prep import ReferencePrepConfig, views_per_reference
from index.factory_choice import FactoryChoice, choose_factory

AUTO = "auto"
DEFAULT_MEMORY_BUDGET = 4 * 2**30

log = logging.getLogger(__name__)


def estimated_vectors(items: Sequence[ReferenceItem], prep: ReferencePrepConfig) -> int:
    """Vectors indexing ``items`` will add, at most (views per reference by kind)."""
    per_kind = {kind: views_per_reference(kind, prep) for kind in {item.kind for item in items}}
    return sum(per_kind[item.kind] for item in items)


def resolve_factory(
    factory: str,
    items: Sequence[ReferenceItem],
    prep: ReferencePrepConfig,
    dim: int,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> FactoryChoice:
    """The factory a new index is created with: ``factory`` itself, or the choice for ``"auto"``
    (a choice that needs training is staged: the index is exact Flat until it holds the
    choice's ``training_vectors``, then trained on them and converted; see
    ``ReferenceIndex.create(train_after_vectors=...)``).

    Raises:
        ConfigError: ``"auto"`` and no factory fits ``memory_budget``.
    """
    if factory != AUTO:
        return FactoryChoice(factory, reason="given")
    n_vectors = estimated_vectors(items, prep)
    try:
        choice = choose_factory(n_vectors, dim, memory_budget)
    except ValueError as e:
        raise ConfigError(f"--factory auto: {e}; raise --memory-budget") from e
    log.info("factory auto: %s (%s)", choice.factory, choice.reason)
    return choice
