"""``counterfeit`` subcommands of the brand review queue (``reviews ...``, ``tune --from-reviews``)
and the ``--queue`` options of ``score`` and ``serve``. Each parses arguments and calls
:mod:`detector.review`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from detector.exit_codes import EXIT_ITEM_FAILED, EXIT_OK


def queue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", metavar="DB_URL",
                   help="record flagged verdicts in this review queue (SQLAlchemy URL or SQLite file; "
                        "the service also serves the brand review portal under /review)")
    p.add_argument("--queue-margin", type=float, default=0.0, metavar="M",
                   help="also queue unflagged verdicts within M below their threshold (default 0: off)")
    p.add_argument("--queue-images", metavar="DIR",
                   help="where queued images are stored (default: beside a SQLite file)")


def add_reviews_parser(sub: Any) -> None:
    """The ``reviews`` subcommands."""
    rv = sub.add_parser("reviews", help="the brand review queue: export decisions, portal users").add_subparsers(
        dest="reviews_command", required=True
    )
    p = rv.add_parser("export", help="write the decisions as a labelled set that 'counterfeit eval' reads")
    p.add_argument("db_url", metavar="DB_URL")
    p.add_argument("--out", required=True, metavar="FILE", help="labelled set to write (.jsonl; images beside it)")
    p.set_defaults(func=cmd_reviews_export)
    p = rv.add_parser("add-user", help="create a portal user (or give it a new token); prints the token")
    p.add_argument("db_url", metavar="DB_URL")
    p.add_argument("name")
    p.add_argument("--role", choices=("brand", "analyst"), default="brand")
    p.add_argument("--brand", help="the brand a brand user reviews")
    p.set_defaults(func=cmd_reviews_add_user)
    p = rv.add_parser("stats", help="per-brand backlog, decisions, confirmation rate, reversals")
    p.add_argument("db_url", metavar="DB_URL")
    p.set_defaults(func=cmd_reviews_stats)


class BatchQueue:
    """``score --queue``: records a batch run's verdicts in the review queue (either engine).

    Args:
        args: The parsed ``score`` options (``--queue``, ``--queue-margin``, ``--queue-images``).
        context: The model and index generation the verdicts were scored with.
    """

    def __init__(self, args: argparse.Namespace, context: Any) -> None:
        from detector.review.recorder import QueueRecorder
        from detector.review.store import ReviewStore

        self.recorder = QueueRecorder(ReviewStore(args.queue, image_dir=args.queue_images),
                                      near_margin=args.queue_margin)
        self.context = context
        self.queued = 0

    def record(self, entry: Any, verdict: Any) -> None:
        """Queue ``verdict`` of listing ``entry`` (a ``ListingEntry``) if it qualifies."""
        from detector.listing_manifest import URL_SCHEMES

        url = entry.source if entry.source.startswith(URL_SCHEMES) else None
        item = self.recorder.record(verdict, self.context, image=None if url else entry.source,
                                    image_url=url, listing_id=entry.name)
        self.queued += item is not None

    def close(self) -> None:
        self.recorder.store.close()
        print(f"queued {self.queued} new item(s) for review in {self.recorder.store.url}", file=sys.stderr)


def cmd_tune_from_reviews(args: argparse.Namespace) -> int:
    from detector.review.store import ReviewStore
    from detector.review.tuning import preset_thresholds, tune_from_reviews
    from detector.thresholds import load_thresholds, save_thresholds

    store = ReviewStore(args.from_reviews)
    try:
        base = load_thresholds(args.base_thresholds) if args.base_thresholds else preset_thresholds(store)
        result = tune_from_reviews(
            store, target_precision=args.target_precision, min_support=args.min_support,
            base=base, version=args.version or "tuned-from-reviews",
        )
    finally:
        store.close()
    origin = args.base_thresholds or (f"the queue's model's shipped table ({base.version})" if base else None)
    print(f"brand entries written into {origin}" if origin else "no base table: the tuned table as a whole")
    print(result.summary())
    save_thresholds(result.thresholds, args.out)
    print(f"thresholds: {args.out}", file=sys.stderr)
    return EXIT_OK if result.result.met else EXIT_ITEM_FAILED


def cmd_reviews_export(args: argparse.Namespace) -> int:
    from detector.review.labelled import export_labels
    from detector.review.store import ReviewStore

    store = ReviewStore(args.db_url)
    try:
        report = export_labels(store, args.out)
    finally:
        store.close()
    print(f"wrote {report.rows} labelled listing(s) to {report.path} ({report.no_image} without a stored "
          f"image, {report.conflicts} image(s) with conflicting decisions left out)", file=sys.stderr)
    return EXIT_OK


def cmd_reviews_add_user(args: argparse.Namespace) -> int:
    from detector.review.store import ReviewStore
    from detector.review.users import add_user

    store = ReviewStore(args.db_url)
    try:
        with store.session() as db:
            token = add_user(db, args.name, args.role, args.brand)
    finally:
        store.close()
    print(token)
    print("the token is shown once; only its hash is stored", file=sys.stderr)
    return EXIT_OK


def cmd_reviews_stats(args: argparse.Namespace) -> int:
    from detector.review.stats import brand_stats
    from detector.review.store import ReviewStore

    store = ReviewStore(args.db_url)
    try:
        stats = brand_stats(store)
    finally:
        store.close()
    print(f"{'brand':20s} {'backlog':>7s} {'confirmed':>9s} {'rejected':>8s} {'skipped':>7s} {'conf.rate':>9s} "
          f"{'per day':>7s} {'reversals':>9s}")
    for s in stats:
        rate = "-" if s.confirmation_rate is None else f"{100 * s.confirmation_rate:.0f}%"
        per_day = sum(s.per_day.values()) / max(1, len(s.per_day))
        print(f"{s.brand:20s} {s.backlog:7d} {s.confirmed:9d} {s.rejected:8d} {s.skipped:7d} {rate:>9s} "
              f"{per_day:7.1f} {s.reversals:9d}")
    return EXIT_OK


# ---------------------------------------------------------------------- serve
