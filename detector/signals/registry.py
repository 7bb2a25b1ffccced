"""The signals a scoring config can name, by name. A new signal is one module with a
:class:`~detector.signals.base.Signal` subclass and one :func:`register` call (or an entry in
:data:`BUILTIN`); a profile or preset then lists it in ``scoring.signals``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detector.errors import ConfigError
from detector.signals.base import Signal
from detector.signals.embedding import EmbeddingSignal
from detector.signals.local_features import LocalFeatureSignal
from detector.signals.logo_area import ProductLogoAreaSignal
from detector.signals.shape import ShapeSignal
from detector.signals.text import TextSignal

if TYPE_CHECKING:
    from detector.scoring_config import ScoringConfig
    from detector.signals.reference_data import ReferenceData

# In scoring order: a signal's proposals are added after those of the signals before it.
BUILTIN: tuple[type[Signal], ...] = (EmbeddingSignal, LocalFeatureSignal, ShapeSignal, ProductLogoAreaSignal)
DEFAULT_SIGNALS: tuple[str, ...] = tuple(cls.name for cls in BUILTIN)

# Registered but in no default list: the text signal (OCR, the ``text`` extra) costs more
# than it adds to the default profile (docs/text.md); ``thorough`` lists it.
OPTIONAL: tuple[type[Signal], ...] = (TextSignal,)

_REGISTRY: dict[str, type[Signal]] = {cls.name: cls for cls in BUILTIN + OPTIONAL}


def register(cls: type[Signal]) -> type[Signal]:
    """Make a signal class available to ``scoring.signals`` by its ``name`` (usable as a
    decorator). Re-registering a name replaces it (tests, plug-ins under development)."""
    if not cls.name or not cls.name.replace("_", "").isalnum():
        raise ConfigError(f"a signal needs a name of letters, digits and '_', got {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> tuple[str, ...]:
    """The registered signal names."""
    return tuple(_REGISTRY)


def check_names(names: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``names`` are registered, distinct and start with the embedding."""
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ConfigError(f"unknown signal(s) {', '.join(unknown)}; registered: {', '.join(_REGISTRY)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"a signal is listed twice in {list(names)}")
    if not names or names[0] != EmbeddingSignal.name:
        # Every candidate is scored by its cosine; the other signals add to that score.
        raise ConfigError(f"scoring.signals must start with {EmbeddingSignal.name!r}, got {list(names)}")


def build_signals(config: ScoringConfig, references: ReferenceData) -> list[Signal]:
    """The config's signals that its settings switch on, in the config's order."""
    check_names(config.signals)
    return [_REGISTRY[n](config, references) for n in config.signals if _REGISTRY[n].active(config)]
