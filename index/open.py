"""One entry point for every index argument: a FAISS directory or a Milvus store.

``--index DIR`` opens the embedded FAISS index (:class:`index.store.ReferenceIndex`);
``--index milvus-lite:PATH`` and ``--index milvus://HOST:PORT/COLLECTION?side=DIR`` open
:class:`index.milvus_store.MilvusReferenceIndex` (pymilvus is imported only then).

Example:
    >>> with open_index("milvus-lite:refs.db") as idx:
    ...     matches = idx.search(queries, k=5)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from index.commit import MANIFEST_NAME
from index.errors import IndexNotFoundError
from index.milvus_spec import is_milvus_spec, parse_milvus_spec
from index.protocol import VectorIndex
from index.records import Fingerprint

IndexSpec = Union[str, os.PathLike[str]]


def open_index(
    spec: IndexSpec, *, writable: bool = False, fingerprint: Fingerprint | None = None, lock_timeout: float = 0.0
) -> VectorIndex:
    """Open the index ``spec`` names (see the module docstring for the forms).

    Raises:
        IndexNotFoundError, IndexMismatchError, IndexLockedError: As the backend's ``open``.
        BackendUnavailableError: A Milvus spec without pymilvus installed.
    """
    backend: Any = _backend(spec)
    return backend.open(_arg(spec), writable=writable, fingerprint=fingerprint, lock_timeout=lock_timeout)


def create_index(
    spec: IndexSpec, *, fingerprint: Fingerprint, factory: str = "Flat",
    build_params: dict[str, Any] | None = None, search_params: dict[str, Any] | None = None,
    train_after_vectors: int = 0,
) -> VectorIndex:
    """Create an empty index where ``spec`` says and open it writable.

    ``build_params``, ``search_params`` and ``train_after_vectors`` go to a FAISS index
    (``ReferenceIndex.create``; Milvus ignores them).

    Raises:
        IndexExistsError: An index already exists there.
        ValueError: A factory string the backend does not support.
    """
    backend: Any = _backend(spec)
    return backend.create(_arg(spec), fingerprint=fingerprint, factory=factory, build_params=build_params,
                          search_params=search_params, train_after_vectors=train_after_vectors)


def index_exists(spec: IndexSpec) -> bool:
    """Whether ``spec`` names an existing index (a Milvus server is asked; a file is looked at)."""
    if not is_milvus_spec(spec):
        return (Path(spec) / MANIFEST_NAME).is_file()
    location = parse_milvus_spec(str(spec))
    if location.lite and not os.path.exists(location.uri):
        return False
    try:
        open_index(spec).close()
    except IndexNotFoundError:
        return False
    return True


def index_spec(index: Any) -> str:
    """The argument that opens ``index`` again (its ``spec``; a FAISS index's directory)."""
    return str(getattr(index, "spec", index.path))


def _arg(spec: IndexSpec) -> Any:
    return str(spec) if is_milvus_spec(spec) else spec


def _backend(spec: IndexSpec) -> type:
    if is_milvus_spec(spec):
        from index.milvus_store import MilvusReferenceIndex

        return MilvusReferenceIndex
    from index.store import ReferenceIndex

    return ReferenceIndex
