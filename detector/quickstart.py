"""The main job end to end on the sample set: build it, index the references, score the
listings, print the flagged ones and where the outputs are."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from index.atomic import atomic_write_bytes


def run_quickstart(
    out: Path,
    *,
    preset: str = "effnet-lite0",
    embedder_options: dict[str, Any] | None = None,
    n_brands: int = 20,
    profile: str | None = None,
    stream: TextIO = sys.stdout,
) -> int:
    """Run sample -> index -> score and print a summary. Returns the process exit code.

    ``profile`` is a scoring profile (``detector.scoring.PROFILES``); None: the preset's defaults.
    """
    from detector.bench.dataset import build_sample_set, read_labels
    from detector.indexing import run_indexing
    from detector.scoring import Detector

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sample = build_sample_set(out / "sample", n_brands=n_brands, seed=0)
    timings["build sample set"] = time.perf_counter() - t0
    say(f"sample set: {sample.root} ({sample.n_references} references, {sample.n_listings} listings)")

    index_dir = out / f"index-{preset}"
    t0 = time.perf_counter()
    report = run_indexing(sample.references_dir, index_dir, preset=preset, embedder_options=embedder_options)
    timings["index references"] = time.perf_counter() - t0
    say(f"index: {index_dir} (added {report.added}, already indexed {report.skipped}, failed {len(report.failed)})")

    labels = read_labels(sample.labels_path)
    options = {k: v for k, v in (embedder_options or {}).items() if k != "random_weights"}
    t0 = time.perf_counter()
    config = {"profile": profile} if profile else None
    with Detector.open(index_dir, config=config, **options) as detector:
        timings["load model + index"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        paths = [sample.labels_path.parent / label.image for label in labels]
        verdicts = detector.score_many(paths, [label.image for label in labels])
        timings[f"score listings ({profile or 'default'} profile)"] = time.perf_counter() - t0
        queue = _review_queue(out, verdicts, paths, detector)

    verdicts_path = out / f"verdicts-{preset}.jsonl"
    atomic_write_bytes(verdicts_path, "".join(json.dumps(v.to_dict()) + "\n" for v in verdicts).encode())

    say()
    say(f"{'listing':34s} {'truth':16s} {'flagged as':16s} {'score':>6s} {'thr':>6s}")
    caught = missed = false_flags = 0
    for label, verdict in zip(labels, verdicts):
        truth = label.brand or "-"
        if verdict.flagged:
            say(f"{label.image:34s} {truth:16s} {verdict.brand or '':16s} {verdict.score:6.3f} {verdict.threshold:6.3f}")
        if label.brand is not None:
            if verdict.flagged and verdict.brand == label.brand:
                caught += 1
            else:
                missed += 1
        elif verdict.flagged:
            false_flags += 1
        if verdict.flagged and label.brand is not None and verdict.brand != label.brand:
            false_flags += 1
    negatives = sum(label.brand is None for label in labels)
    say()
    say(f"flagged {sum(v.flagged for v in verdicts)} of {len(verdicts)} listings: "
        f"{caught} of {caught + missed} listings with an indexed brand caught, "
        f"{false_flags} wrong flag(s) ({negatives} listings show no indexed brand)")
    say(f"verdicts: {verdicts_path}")
    say(f"index report: {report.report_path}")
    say("timings: " + ", ".join(f"{name} {sec:.1f}s" for name, sec in timings.items()))
    if queue is not None:
        _say_portal(say, queue, index_dir)
    return 0


def _review_queue(out: Path, verdicts: list[Any], paths: list[Path], detector: Any) -> Any:
    """The sample review queue (``out/review.sqlite``), or None without the ``review`` extra."""
    try:
        from detector.review.recorder import RecordContext
        from detector.review.sample import fill_sample_queue
    except ImportError:
        return None
    return fill_sample_queue(out, verdicts, paths, RecordContext.of(detector))


def _say_portal(say: Any, queue: Any, index_dir: Path) -> None:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(queue.kinds.items())) or "nothing new"
    say(f"review queue: {queue.db_path} ({kinds} queued this run; {len(queue.brands)} brand(s) to review)")
    say("open the brand review portal on it:")
    say(f"  counterfeit serve --index {index_dir} --queue {queue.db_path}   # then http://127.0.0.1:8000/review")
    brand_user = queue.brand_user()
    if brand_user is not None:
        say(f"  log in as {brand_user[len('brand-'):]}'s reviewer: {queue.tokens[brand_user]}")
    say(f"  log in as the platform analyst: {queue.tokens['analyst']}")
    say(f"  (every sample user's token: {queue.tokens_path})")
