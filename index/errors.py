"""Exceptions raised by the reference index. All derive from :class:`IndexStoreError`.

Messages say what went wrong and what to do about it (rebuild, repair, wait for the writer).
"""

from __future__ import annotations

# Appended to every error about the faiss file: SQLite keeps the raw vectors, so it can be rebuilt.
REPAIR_HINT = (
    "repair it with ReferenceIndex.repair(path), which rebuilds the faiss file from the vectors "
    "stored in records.sqlite"
)


class IndexStoreError(Exception):
    """Base class of every error the index package raises on purpose."""


class IndexNotFoundError(IndexStoreError):
    """No index at the given path (missing directory or manifest)."""


class IndexExistsError(IndexStoreError):
    """``create`` was asked to write where an index (or other files) already exist."""


class IndexMismatchError(IndexStoreError):
    """The index was built with another model (fingerprint or dim differ) or with other settings."""


class IndexCorruptError(IndexStoreError):
    """Files are missing, truncated, or inconsistent with each other; the message says how to repair."""


class IndexLockedError(IndexStoreError):
    """Another writer holds the index's writer lock."""


class IndexTrainingError(IndexStoreError):
    """The faiss index needs training and the vectors given cannot train it (usually too few)."""


class ReadOnlyIndexError(IndexStoreError):
    """A write was attempted on an index opened read-only."""


class BackendUnavailableError(IndexStoreError):
    """The index names a backend (e.g. Milvus) whose optional packages are not installed."""
