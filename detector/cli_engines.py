"""The ``counterfeit`` options and calls of the execution engines (``--engine local|ray``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from detector.exit_codes import EXIT_ITEM_FAILED, EXIT_OK


def engine_args(p: argparse.ArgumentParser) -> None:
    """--engine, --ray-address, --work-dir, --actors."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: Ray Data tasks and model actors ('ray' extra; "
                        "see docs/distributed.md)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --engine ray: the cluster (e.g. ray://head:10001 or auto); default: a local Ray")
    p.add_argument("--work-dir", metavar="DIR",
                   help="with --engine ray: the checkpoint folder an interrupted run resumes from")
    p.add_argument("--actors", type=int, metavar="N",
                   help="with --engine ray: model actors (default: one per GPU of the cluster, else 1)")


def indexing_job(args: argparse.Namespace) -> Callable[..., Any]:
    """``run_indexing`` of the chosen engine (the Ray one bound to its options)."""
    if args.engine != "ray":
        from detector.indexing import run_indexing

        return run_indexing
    from functools import partial

    from detector.engines.ray_indexing import run_ray_indexing

    return partial(run_ray_indexing, ray_address=args.ray_address, work_dir=args.work_dir, actors=args.actors)


def score_on_ray(
    args: argparse.Namespace, entries: list[Any], options: dict[str, Any], scoring: dict[str, Any],
    verdict_line: Callable[[Any], str],
) -> int:
    """``score --engine ray``: the backlog on Ray, verdicts printed in input order."""
    from detector.cli import _progress
    from detector.cli_reviews import BatchQueue
    from detector.engines.ray_scoring import IndexIdentity, run_ray_scoring
    from detector.review.recorder import RecordContext

    options.pop("random_weights", None)
    identity = IndexIdentity.of(args.index)
    # The driver records: the verdicts come back here in input order, beside their entries.
    queue = BatchQueue(args, RecordContext.of_index(identity.fingerprint, identity.generation)) if args.queue else None
    advance, on_total, close = _progress("scoring")
    on_total(len(entries))
    failed = 0
    try:
        verdicts = run_ray_scoring(
            entries, args.index, thresholds=args.thresholds, scoring=scoring,
            detector_options=options, ray_address=args.ray_address,
            work_dir=args.work_dir or "counterfeit-ray-work", actors=args.actors, progress=advance,
            identity=identity,
        )
        for entry, verdict in zip(entries, verdicts):
            failed += verdict.error is not None
            print(json.dumps(verdict.to_dict()) if args.json else verdict_line(verdict), flush=True)
            if queue is not None:
                queue.record(entry, verdict)
    finally:
        close()
        if queue is not None:
            queue.close()
    if failed:
        print(f"{failed} image(s) could not be scored", file=sys.stderr)
    return EXIT_ITEM_FAILED if failed else EXIT_OK
