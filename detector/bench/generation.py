"""Generate a dataset's items (in worker processes or inline) and write the set into place.

A set is built in a temporary sibling folder and moved into place whole, with its
``references.csv`` manifest, ``labels.jsonl`` and ``dataset.json``; a folder that already holds
a build with the same parameters is reused instead.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from detector.bench.build_context import (
    LEGACY_DEFAULTS,
    STAGE_PICK,
    BuildContext,
    BuildParams,
    Product,
    item_rng,
)
from detector.bench.listings import query
from detector.bench.references import logo_reference, product_reference
from detector.errors import ConfigError, DetectorError
from index.atomic import atomic_write_bytes, fsync_dir

LABELS_FILE = "labels.jsonl"
MANIFEST_FILE = "references.csv"
INFO_FILE = "dataset.json"
FORMAT_VERSION = 2  # 2: product rows may carry their logo box

# The build context of this process, set once per worker by the pool initializer (and before
# inline runs) so that jobs do not carry it.
_WORKER_CONTEXT: BuildContext | None = None


def _init_worker(ctx: BuildContext) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ctx


def _run_job(payload: tuple[str, Any]) -> tuple[str, Any]:
    """Run one job in a worker; failures come back as values so the batch can go on."""
    name, job = payload
    assert _WORKER_CONTEXT is not None
    try:
        return ("ok", _JOBS[name](_WORKER_CONTEXT, job))
    except (DetectorError, OSError, ValueError) as e:
        return ("error", f"{name} {job}: {e}")


_JOBS: dict[str, Callable[[BuildContext, Any], Any]] = {
    "logo": logo_reference,
    "product": product_reference,
    "query": query,
}


def _run_all(
    ctx: BuildContext, name: str, jobs: Sequence[Any], workers: int
) -> tuple[list[Any], list[str]]:
    payloads = [(name, job) for job in jobs]
    if workers <= 1 or len(jobs) < 8:
        _init_worker(ctx)
        results = [_run_job(p) for p in payloads]
    else:
        # spawn, not fork: the caller may have torch/BLAS threads that fork would copy badly.
        with multiprocessing.get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=(ctx,)
        ) as pool:
            results = list(pool.imap(_run_job, payloads, chunksize=8))
    done = [value for status, value in results if status == "ok"]
    errors = [value for status, value in results if status == "error"]
    return done, errors


def build(out_dir: Path, params: BuildParams, workers: int) -> tuple[dict[str, Any], bool]:
    """Build into a temp folder and move it into place; reuse an identical existing build.

    Returns:
        The dataset.json content and whether it was reused.
    """
    out_dir = Path(out_dir)
    params_json = _params_json(params)
    existing = _existing_info(out_dir)
    if existing is not None:
        if existing.get("params") == params_json:
            return existing, True
        raise ConfigError(
            f"{out_dir} already holds a dataset built with other parameters; "
            "choose another output folder or delete it"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} exists and is not empty; choose an empty or new folder")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as e:
        raise DetectorError(f"cannot create dataset folder {out_dir}: {e}") from e
    try:
        info = _build_into(tmp, params, params_json, workers)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); os.replace needs it gone or empty
        os.replace(tmp, out_dir)
        fsync_dir(out_dir.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DetectorError(f"cannot write dataset to {out_dir}: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info, False


def _build_into(
    root: Path, params: BuildParams, params_json: dict[str, Any], workers: int
) -> dict[str, Any]:
    ctx = BuildContext(root, params)
    rows, errors = _run_all(ctx, "logo", list(params.brands), workers)

    products: list[Product] = []
    n_products = round(params.product_fraction * len(params.brands))
    if n_products:
        order = item_rng(params.seed, STAGE_PICK).permutation(len(params.brands))[:n_products]
        # Consecutive product brands share a backdrop: groups of look-alike scenes.
        jobs = [
            (i, params.brands[int(b)], i // params.brands_per_scene) for i, b in enumerate(order)
        ]
        products, product_errors = _run_all(ctx, "product", jobs, workers)
        errors += product_errors
        # With logo_boxes, brands mark where the logo is on their product photo (the scorer
        # checks that area); without, a product row has no attributes (most brands give none).
        rows += [
            (p.path, p.slug, "product", p.product_id, _product_attributes(p, params.logo_boxes))
            for p in products
        ]
    ctx = BuildContext(root, params, tuple(products))

    query_jobs = [
        (group, i)
        for group in params.groups
        if not (group == "product_repost" and not products)
        for i in range(params.per_class)
    ]
    labels, query_errors = _run_all(ctx, "query", query_jobs, workers)
    errors += query_errors

    _write_manifest(root / MANIFEST_FILE, rows)
    _write_text(root / LABELS_FILE, "".join(json.dumps(l.to_dict()) + "\n" for l in labels))
    info = {
        "format": FORMAT_VERSION,
        "params": params_json,
        "n_references": len(rows),
        "n_queries": len(labels),
        "group_counts": dict(Counter(label.group for label in labels)),
        "skipped": errors,
    }
    _write_text(root / INFO_FILE, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_manifest(path: Path, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "brand", "kind", "product_id", "attributes"])
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


def _product_attributes(product: Product, logo_boxes: bool) -> str:
    return json.dumps({"logo_box": [int(v) for v in product.box]}) if logo_boxes else ""


def _params_json(params: BuildParams) -> dict[str, Any]:
    # Round-trip through JSON so tuples compare equal to what a reload gives back. Fields added
    # later are left out at the value earlier builds had: those builds keep their bytes.
    data = asdict(params)
    for key, legacy in LEGACY_DEFAULTS.items():
        if data[key] == legacy:
            del data[key]
    return json.loads(json.dumps(data))


def _existing_info(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable; delete {out_dir} and rebuild: {e}") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{path} has an unknown format; delete {out_dir} and rebuild")
    return info
