"""Project exception types. Batch APIs report these per item; single-item APIs raise them."""

from __future__ import annotations


class DetectorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(DetectorError):
    """A preset, thresholds file or option is unknown or invalid."""


class ImageLoadError(DetectorError):
    """An image could not be read: empty, truncated, not an image, or too large.

    Attributes:
        item: The path/name of the offending item, for reports.
    """

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason


class WeightsUnavailableError(DetectorError):
    """Model weights cannot be obtained (offline, missing file). The message says what to fetch."""
