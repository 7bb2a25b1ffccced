"""Parsing an index argument that names a Milvus store instead of a FAISS directory.

Two forms (the FAISS directory stays the plain path):

* ``milvus-lite:PATH`` -- a local Milvus Lite database at ``PATH`` (ending in ``.db``), used by
  one process at a time.
* ``milvus://HOST:PORT/COLLECTION?side=DIR`` -- a Milvus server's collection. ``DIR`` is the
  folder every process of the deployment mounts for the side data (aux blobs), the indexing
  reports and the background vectors. A token, if the server needs one, comes from the
  ``MILVUS_TOKEN`` environment variable, never from the argument (it would end up in logs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

LITE_PREFIX = "milvus-lite:"
SERVER_PREFIX = "milvus://"
LITE_COLLECTION = "references"
SIDE_SUFFIX = ".side"  # milvus-lite:PATH keeps its side folder at PATH.side
TOKEN_ENV = "MILVUS_TOKEN"
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")  # Milvus' own naming rule


@dataclass(frozen=True)
class MilvusLocation:
    """Where a Milvus-backed index lives.

    Attributes:
        spec: The argument it was parsed from (what :func:`index.open.open_index` takes back).
        uri: What ``pymilvus.MilvusClient`` connects to: a local file or ``http://HOST:PORT``.
        collection: Collection name.
        side_dir: Local folder of the side data, reports and background vectors.
        lite: True for a Milvus Lite file.
    """

    spec: str
    uri: str
    collection: str
    side_dir: Path
    lite: bool

    @property
    def token(self) -> str:
        return os.environ.get(TOKEN_ENV, "")


def is_milvus_spec(spec: str | os.PathLike[str]) -> bool:
    """True when ``spec`` names a Milvus store (``milvus-lite:`` or ``milvus://``)."""
    return isinstance(spec, str) and (spec.startswith(LITE_PREFIX) or spec.startswith(SERVER_PREFIX))


def parse_milvus_spec(spec: str) -> MilvusLocation:
    """Parse ``milvus-lite:PATH`` or ``milvus://HOST:PORT/COLLECTION?side=DIR``.

    Raises:
        ValueError: Malformed argument; the message shows the accepted forms.
    """
    if spec.startswith(LITE_PREFIX):
        raw = spec[len(LITE_PREFIX) :]
        if not raw:
            raise ValueError(f"{spec!r}: give the database file, e.g. milvus-lite:refs.db")
        path = Path(raw).expanduser().absolute()
        if path.suffix != ".db":  # pymilvus takes a local path as Milvus Lite only when it ends in .db
            raise ValueError(f"{spec!r}: a Milvus Lite database file name ends in .db, e.g. milvus-lite:refs.db")
        return MilvusLocation(spec=spec, uri=str(path), collection=LITE_COLLECTION,
                              side_dir=path.with_name(path.name + SIDE_SUFFIX), lite=True)  # fmt: skip
    if not spec.startswith(SERVER_PREFIX):
        raise ValueError(f"{spec!r} is not a Milvus index (milvus-lite:PATH or milvus://HOST:PORT/COLLECTION)")
    parts = urlsplit(spec)
    collection = parts.path.strip("/")
    side = parse_qs(parts.query).get("side", [""])[0]
    if not parts.hostname or parts.port is None or not _COLLECTION_NAME.match(collection):
        raise ValueError(
            f"{spec!r}: expected milvus://HOST:PORT/COLLECTION?side=DIR (collection: letters, digits, _)"
        )
    if parts.username or parts.password:
        raise ValueError(f"put the Milvus credentials in ${TOKEN_ENV}, not in the index argument")
    if not side:
        raise ValueError(
            f"{spec!r} needs ?side=DIR: the folder shared by the deployment's processes for the "
            "side data (aux blobs), reports and background vectors"
        )
    return MilvusLocation(spec=spec, uri=f"http://{parts.hostname}:{parts.port}", collection=collection,
                          side_dir=Path(side).expanduser().absolute(), lite=False)  # fmt: skip
