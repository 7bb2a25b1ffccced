"""``counterfeit`` command line. Each subcommand parses arguments and calls the library.

Exit codes: 0 success; 1 some items failed (reported per item); 2 bad usage or configuration;
130 interrupted (committed work is kept; rerun to continue).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detector.cli_engines import engine_args, indexing_job, score_on_ray
from detector.cli_reviews import BatchQueue, add_reviews_parser, cmd_tune_from_reviews, queue_args
from detector.exit_codes import EXIT_INTERRUPTED, EXIT_ITEM_FAILED, EXIT_OK, EXIT_USAGE
from index.factory_choice import parse_memory_size


def _model_args(p: argparse.ArgumentParser, *, with_model: bool = True) -> None:
    if with_model:
        p.add_argument("--model", metavar="PRESET", help="model preset (see 'counterfeit models')")
    p.add_argument("--checkpoint", metavar="PATH", help="local weights for the preset's architecture")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--precision", help="fp32 | fp16 | bf16 (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="images per model call (default: the preset's)")


def _profile_arg(p: argparse.ArgumentParser) -> None:
    from detector.scoring import PROFILES

    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="scoring profile: 'fast' (the preset's defaults), 'lean' (those without the "
                        "shape search: quicker, finds fewer logos in photos) or 'thorough' (regions, mark "
                        "silhouettes, the mirrored listing: finds more, slower); picks the profile's thresholds")


def _embedder_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"device": args.device}
    for key in ("checkpoint", "precision", "batch_size"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    if getattr(args, "random_weights", False):
        options["random_weights"] = True
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="counterfeit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    idx = sub.add_parser("index", help="build and maintain a reference index").add_subparsers(
        dest="index_command", required=True
    )
    for name, help_text in (("build", "create an index (or add to it) from references"),
                            ("add", "add references to an existing index")):
        p = idx.add_parser(name, help=help_text)
        p.add_argument("refs", help="folder REFS/<brand>/.../<image>, or a .csv/.jsonl/.parquet manifest")
        p.add_argument("--index", required=True, metavar="DIR")
        p.add_argument("--factory", default="Flat",
                       help="FAISS factory string for a new index, or 'auto': chosen by --memory-budget")
        p.add_argument("--memory-budget", type=parse_memory_size, default="4GiB", metavar="SIZE",
                       help="RAM the faiss index may take, for --factory auto, and the descriptor store of "
                            "local features when this run rebuilds it (e.g. 8GiB; default 4GiB)")
        p.add_argument("--kind", default="product", choices=("logo", "product"),
                       help="kind of folder images not recognisably logos (default: product)")
        p.add_argument("--chunk-size", type=int, default=128, help="images per atomic commit")
        p.add_argument("--random-weights", action="store_true",
                       help="the preset's architecture with seeded random weights (speed tests only)")
        p.add_argument("--read-text", action="store_true",
                       help="OCR each logo and store its text as the brand's names (text signal; 'text' extra)")
        _model_args(p)
        engine_args(p)
        p.set_defaults(func=cmd_index_build if name == "build" else cmd_index_add)

    p = idx.add_parser("remove", help="withdraw references")
    p.add_argument("--index", required=True, metavar="DIR")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--brand")
    group.add_argument("--ref-id", type=int, action="append", help="repeatable")
    group.add_argument("--product-id")
    p.set_defaults(func=cmd_index_remove)

    p = idx.add_parser("info", help="counts per brand and kind, model, factory, size")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index_info)

    p = idx.add_parser("search-params", help="show or set the FAISS index's default search parameters")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--set", action="append", default=[], metavar="NAME=N", type=parse_search_param,
                   help="e.g. nprobe=1024 or quantizer_efSearch=2048 (repeatable); none: show them")
    p.set_defaults(func=cmd_index_search_params)

    p = sub.add_parser("score", help="score listing images against an index")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR")
    p.add_argument("--manifest", metavar="FILE",
                   help="a backlog to score: .jsonl/.csv/.parquet with an image, path or url field per row")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--top-k", type=int, help="matches reported per image")
    p.add_argument("--thresholds", metavar="FILE", help="thresholds file (default: the preset's)")
    p.add_argument("--json", action="store_true", help="one JSON object per image, in input order")
    p.add_argument("--no-regions", action="store_true", help="whole frame only")
    p.add_argument("--no-verify", action="store_true", help="skip geometric verification")
    p.add_argument("--scoring", type=json.loads, metavar="JSON",
                   help='scoring overrides, e.g. \'{"regions": {"enabled": true, "max_regions": 8}}\'')
    queue_args(p)
    _profile_arg(p)
    _model_args(p, with_model=False)
    engine_args(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("eval", help="score a labelled set (cached) and write metrics, plots, report")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--labels", required=True, metavar="FILE", help="labelled set (.jsonl or .csv)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--thresholds", metavar="FILE", help="thresholds for the decision figures")
    p.add_argument("--target-precision", type=float, default=0.9, help="for recall@precision (default 0.9)")
    p.add_argument("--cache", metavar="FILE", help="result cache (default OUT/cache.sqlite)")
    p.add_argument("--no-regions", action="store_true")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--scoring", type=json.loads, metavar="JSON", help="scoring overrides (see 'score --help')")
    p.add_argument("--top-k", type=int, help=argparse.SUPPRESS)
    _profile_arg(p)
    _model_args(p, with_model=False)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("tune", help="choose thresholds for a target precision / false-positive rate")
    p.add_argument("--eval", metavar="DIR", help="output folder of 'counterfeit eval' (or --from-reviews)")
    p.add_argument("--from-reviews", metavar="DB_URL",
                   help="tune per-brand thresholds on the review queue's confirmed/rejected decisions")
    p.add_argument("--base-thresholds", metavar="FILE",
                   help="with --from-reviews: the table the brand entries are written into (default: the "
                        "shipped table of the model the queue's items were scored with)")
    p.add_argument("--out", required=True, metavar="FILE", help="thresholds file to write (.json/.yaml)")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--max-fpr", type=float, help="maximum false-positive rate on logo-free listings")
    p.add_argument("--min-support", type=int, default=20, help="labelled positives a brand needs for its own threshold")
    p.add_argument("--tune-groups", default="", help="comma-separated groups to tune on (holdout mode)")
    p.add_argument("--test-groups", default="", help="comma-separated held-out groups to report on")
    p.add_argument("--version", help="version string written into the thresholds file")
    p.add_argument("--held-out-brands", action="store_true",
                   help="also tune on each branded listing scored without its brand, as a listing of a "
                        "brand that is not indexed (many more negatives than the set has; docs/evaluation.md)")
    p.add_argument("--transfer-eval", action="append", default=[], metavar="DIR",
                   help="another 'counterfeit eval' folder (another logo collection, other backgrounds) to "
                        "report the tuned table on; repeatable")
    p.add_argument("--transfer-margin", type=float, default=0.02,
                   help="warn when precision or false-flag rate there differ by more (default 0.02)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("serve", help="HTTP scoring service (FastAPI + uvicorn)")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="processes; each loads the model once")
    p.add_argument("--thresholds", metavar="FILE")
    p.add_argument("--admin-token-file", metavar="FILE",
                   help="bearer token for admin endpoints (else $COUNTERFEIT_ADMIN_TOKEN; none = disabled)")
    p.add_argument("--score-token-file", metavar="FILE",
                   help="bearer token required for scoring (else $COUNTERFEIT_SCORE_TOKEN; none = open)")
    p.add_argument("--max-batch", type=int, default=32, help="images per model call (1 = no micro-batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait to fill a batch")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request time limit, seconds")
    p.add_argument("--max-files", type=int, default=16, help="images per request")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit")
    p.add_argument("--no-regions", action="store_true")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--scoring", type=json.loads, metavar="JSON", help="scoring overrides (see 'score --help')")
    p.add_argument("--top-k", type=int)
    queue_args(p)
    _profile_arg(p)
    _model_args(p, with_model=False)
    p.set_defaults(func=cmd_serve)

    add_reviews_parser(sub)

    p = sub.add_parser("bench", help="quality per transformation class and speed, on real brand logos")
    from detector.bench.runner import add_arguments

    add_arguments(p)  # defines --out, --model, --checkpoint, --device, ... itself
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("models", help="list model presets")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("sample", help="build the quickstart sample set (real brand logos)")
    p.add_argument("out", metavar="DIR")
    p.add_argument("--n-brands", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("quickstart", help="sample set -> index -> score -> flagged listings")
    p.add_argument("--out", default="quickstart-out", metavar="DIR")
    p.add_argument("--model", default="effnet-lite0", metavar="PRESET")
    _profile_arg(p)
    _model_args(p, with_model=False)
    p.set_defaults(func=cmd_quickstart)

    return parser


# ---------------------------------------------------------------------- index
def _progress(desc: str) -> tuple[Callable[[int], None], Callable[[int], None], Callable[[], None]]:
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def on_total(total: int) -> None:
        bar["bar"] = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)

    def advance(n: int) -> None:
        if "bar" in bar:
            bar["bar"].update(n)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return advance, on_total, close


# What the index commands say after their progress bar: the side indexes' sync, which can take
# many minutes on a large library (a store rebuild over 1M logos: ~45 min).
SYNC_LOGGERS = ("detector.descriptor_store", "detector.shape_sync")


def _run_indexing(args: argparse.Namespace, *, create: bool) -> int:
    run = indexing_job(args)
    for name in SYNC_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    advance, on_total, close = _progress("indexing")
    try:
        report = run(
            args.refs,
            args.index,
            preset=args.model,
            factory=args.factory,
            create=create,
            default_kind=args.kind,
            embedder_options=_embedder_options(args),
            chunk_size=args.chunk_size,
            progress=advance,
            on_total=on_total,
            read_text=getattr(args, "read_text", False),
            memory_budget=args.memory_budget,
        )
    finally:
        close()
    print(f"added {report.added}, skipped (already indexed) {report.skipped}, failed {len(report.failed)} "
          f"in {report.seconds:.1f}s", file=sys.stderr)
    for failure in report.failed:
        print(f"  failed: {failure.item}: {failure.reason}", file=sys.stderr)
    print(f"report: {report.report_path}", file=sys.stderr)
    if report.interrupted:
        print("interrupted: committed work is kept; rerun the same command to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ITEM_FAILED if report.failed else EXIT_OK


def cmd_index_build(args: argparse.Namespace) -> int:
    return _run_indexing(args, create=True)


def cmd_index_add(args: argparse.Namespace) -> int:
    return _run_indexing(args, create=False)


def cmd_index_remove(args: argparse.Namespace) -> int:
    from detector.indexing import remove_references
    from index.open import open_index

    with open_index(args.index, writable=True) as index:
        # Withdrawn logos: their brand's product photos are located again in the same commit.
        removed = remove_references(index, ref_ids=args.ref_id, brand=args.brand, product_id=args.product_id)
    print(f"removed {removed} reference(s)", file=sys.stderr)
    return EXIT_OK


def cmd_index_info(args: argparse.Namespace) -> int:
    from detector.brand_names import brand_names_of
    from index.open import open_index

    with open_index(args.index) as index:
        info = index.info().to_dict()
        names = brand_names_of(index.references())  # the text signal's names per brand
    info["names"] = {brand: list(n) for brand, n in sorted(names.items())}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return EXIT_OK
    fp = info["fingerprint"]
    print(f"index     {info['path']}")
    print(f"model     {fp['preset']} ({fp['arch']}, weights {fp['weights']}, dim {fp['dim']})")
    print(f"factory   {info['factory']}   references {info['count']}   vectors {info['vectors']}")
    print(f"size      {info['size_bytes'] / 1e6:.2f} MB   generation {info['generation']}   updated {info['updated_at']}")
    print(f"{'brand':30s} {'logo':>6s} {'product':>8s}  names")
    for brand, kinds in sorted(info["per_brand"].items()):
        print(f"{brand:30s} {kinds.get('logo', 0):6d} {kinds.get('product', 0):8d}  {' | '.join(names.get(brand, ()))}")
    return EXIT_OK


def parse_search_param(text: str) -> tuple[str, int]:
    """``NAME=N`` (argparse type of ``index search-params --set``)."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER (e.g. nprobe=1024), got {text!r}") from None


def cmd_index_search_params(args: argparse.Namespace) -> int:
    from detector.errors import ConfigError
    from index.open import open_index

    with open_index(args.index, writable=bool(args.set)) as index:
        if not hasattr(index, "search_defaults"):
            raise ConfigError(f"{args.index}: only a FAISS index directory has default search parameters")
        try:
            params = index.set_search_params(dict(args.set)) if args.set else index.search_defaults
        except ValueError as e:  # a parameter this index does not have, or a bad value
            raise ConfigError(str(e)) from e
        print(json.dumps({"factory": index.factory, "search_params": params}, sort_keys=True))
    return EXIT_OK


# ---------------------------------------------------------------------- score
def _scoring_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--scoring JSON first, then the switches (--profile, --top-k, --no-regions, --no-verify)."""
    overrides: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in (args.scoring or {}).items()}
    if args.profile is not None:
        overrides["profile"] = args.profile
    if args.top_k is not None:
        overrides["top_k"] = args.top_k
    if args.no_regions:
        overrides["regions"] = {**overrides.get("regions", {}), "enabled": False}
    if args.no_verify:
        overrides["verify"] = {**overrides.get("verify", {}), "enabled": False}
    return overrides


def cmd_score(args: argparse.Namespace) -> int:
    from detector.listing_manifest import listing_entries

    if not args.images and not args.manifest:
        print("error: score needs images, folders or --manifest FILE", file=sys.stderr)
        return EXIT_USAGE
    entries = listing_entries(args.images, args.manifest)
    if args.engine == "ray":
        return score_on_ray(args, entries, _embedder_options(args), _scoring_overrides(args), _verdict_line)
    from detector.listing_manifest import score_entries
    from detector.scoring import Detector

    options = _embedder_options(args)
    options.pop("random_weights", None)
    with Detector.open(args.index, thresholds=args.thresholds, config=_scoring_overrides(args), **options) as det:
        failed = 0
        from tqdm import tqdm

        from detector.review.recorder import RecordContext

        batch = max(1, min(16, det.embedder.batch_size))
        queue = BatchQueue(args, RecordContext.of(det)) if args.queue else None
        with tqdm(total=len(entries), desc="scoring", unit="img", file=sys.stderr, disable=None) as bar:
            for start in range(0, len(entries), batch):
                chunk = entries[start : start + batch]
                for entry, verdict in zip(chunk, score_entries(det, chunk)):
                    failed += verdict.error is not None
                    print(json.dumps(verdict.to_dict()) if args.json else _verdict_line(verdict), flush=True)
                    if queue is not None:
                        queue.record(entry, verdict)
                bar.update(len(chunk))
        if queue is not None:
            queue.close()
    if failed:
        print(f"{failed} image(s) could not be scored", file=sys.stderr)
    return EXIT_ITEM_FAILED if failed else EXIT_OK


def _verdict_line(v: Any) -> str:
    if v.error:
        return f"ERROR    {v.image}: {v.error}"
    if v.brand is None:
        return f"ok       {v.image}: no match"
    status = "FLAGGED" if v.flagged else "ok"
    return f"{status:8s} {v.image}: {v.brand} score {v.score:.3f} (threshold {v.threshold:.3f}, {v.threshold_source})"


# ---------------------------------------------------------------------- eval / tune
def cmd_eval(args: argparse.Namespace) -> int:
    from detector.evaluation.jobs import eval_job

    options = _embedder_options(args)
    advance, on_total, close = _progress("evaluating")
    try:
        outcome = eval_job(
            args.index, args.labels, args.out,
            thresholds=args.thresholds, target_precision=args.target_precision, cache_path=args.cache,
            detector_options=options, scoring_options=_scoring_overrides(args),
            progress=advance, on_total=on_total,
        )
    finally:
        close()
    run = outcome.run
    print(f"scored {run.computed} image(s), {run.cached} from cache, {len(run.failed)} failed, "
          f"in {run.seconds:.1f}s", file=sys.stderr)
    print(outcome.report.summary_md.read_text(encoding="utf-8"))
    print(f"scores: {outcome.scores_path}\nreport: {outcome.report.out_dir}", file=sys.stderr)
    return EXIT_ITEM_FAILED if run.failed else EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from detector.evaluation.jobs import tune_job
    from detector.evaluation.tuning import HoldoutResult

    def groups(text: str) -> list[str]:
        return [g for g in (part.strip() for part in text.split(",")) if g]

    if args.from_reviews:
        return cmd_tune_from_reviews(args)
    if not args.eval:
        print("error: tune needs --eval DIR or --from-reviews DB_URL", file=sys.stderr)
        return EXIT_USAGE

    result = tune_job(
        args.eval, args.out,
        target_precision=args.target_precision, max_fpr=args.max_fpr, min_support=args.min_support,
        tune_groups=groups(args.tune_groups), test_groups=groups(args.test_groups), version=args.version,
        held_out_brands=args.held_out_brands,
    )
    if isinstance(result, HoldoutResult):
        print(result.tuning.summary())
        t = result.test
        print(f"held-out ({result.n_test} listings): precision {t.precision:.3f} "
              f"recall {t.recall:.3f} FPR {t.fpr:.3f}")
        met = result.tuning.met
    else:
        print(result.summary())
        met = result.met
    if args.transfer_eval:
        from detector.evaluation.jobs import transfer_job

        table = result.tuning.thresholds if isinstance(result, HoldoutResult) else result.thresholds
        for check in transfer_job(table, args.eval, args.transfer_eval, margin=args.transfer_margin):
            print(check.summary())
    print(f"thresholds: {args.out}", file=sys.stderr)
    return EXIT_OK if met else EXIT_ITEM_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    from detector.service.server import serve

    options = _embedder_options(args)
    serve(
        args.index, args.host, args.port, args.workers,
        thresholds=args.thresholds, device=options.pop("device"), scoring=_scoring_overrides(args),
        admin_token_file=args.admin_token_file, score_token_file=args.score_token_file,
        settings={
            "max_batch_images": args.max_batch, "max_wait_ms": args.max_wait_ms,
            "request_timeout_s": args.timeout, "max_files": args.max_files,
            "max_body_bytes": int(args.max_body_mb * 1024 * 1024),
            **({"queue_url": args.queue, "queue_margin": args.queue_margin, "queue_image_dir": args.queue_images}
               if args.queue else {}),
        },
        **options,
    )
    return EXIT_OK


# ---------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from detector.bench.runner import config_from_args, run_benchmark

    result = run_benchmark(args.out, config_from_args(args))
    print(result.markdown)
    print(f"results: {result.json_path} and {result.markdown_path}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- misc
def cmd_models(args: argparse.Namespace) -> int:
    from detector.models import get_preset, list_presets

    for name in list_presets():
        preset = get_preset(name)
        print(f"{name:18s} {preset.backend}:{preset.arch} dim {preset.dim} {preset.image_size}px")
    return EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from detector.bench.dataset import build_sample_set

    sample = build_sample_set(args.out, n_brands=args.n_brands, seed=args.seed)
    print(json.dumps({k: str(v) for k, v in vars(sample).items()}, indent=2))
    return EXIT_OK


def cmd_quickstart(args: argparse.Namespace) -> int:
    from detector.quickstart import run_quickstart

    options = _embedder_options(args)
    return run_quickstart(Path(args.out), preset=args.model, embedder_options=options, profile=args.profile)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from detector.errors import DetectorError
    from index.errors import IndexStoreError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DetectorError, IndexStoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
