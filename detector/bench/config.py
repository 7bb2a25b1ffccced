"""What a bench run is configured with: dataset sizes, :class:`BenchConfig` and its CLI options.

The options are shared by ``counterfeit bench`` and ``scripts/bench.py``
(:func:`add_arguments`, :func:`config_from_args`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from detector.bench.build_context import BACKGROUNDS
from detector.bench.logo_collections import COLLECTIONS
from detector.bench.variants import VARIANTS
from detector.errors import ConfigError


@dataclass(frozen=True)
class BenchSize:
    """Dataset and measurement sizes of one benchmark size.

    Attributes:
        name: ``"small"`` (CI) or ``"full"``.
        n_brands: Indexed brands (one logo reference each).
        n_unindexed: Brands only shown in ``neg_unindexed`` queries.
        queries_per_class: Queries per transformation class.
        product_photo_fraction: Share of brands that also get a product-photo reference.
        speed_queries_per_class: Queries per class in the speed subset (latency, throughput,
            search vectors).
        search_batch: Query vectors per batched search call.
        embed_images, embed_rounds, embed_latency_repeats: Files per photo size, alternating
            rounds and single-image calls of the embedding comparison (small: its quick mode).
        throughput_rounds: Rounds of the scoring-throughput comparison (every setting scores
            the speed subset once a round, in rotating order).
    """

    name: str
    n_brands: int
    n_unindexed: int
    queries_per_class: int
    product_photo_fraction: float
    speed_queries_per_class: int
    search_batch: int
    embed_images: int = 8
    embed_rounds: int = 3
    embed_latency_repeats: int = 20
    throughput_rounds: int = 3


SIZES: dict[str, BenchSize] = {
    # CI: must finish well under 2 minutes on 2 cores with the tiny preset.
    "small": BenchSize("small", 6, 3, 2, 0.5, 1, 256, throughput_rounds=1),
    # 1,000 brands, 50 queries per class: effnet-lite0 with the whole-image and default
    # variants ran in ~10 minutes on 2 shared cores (regions+verification ~1 s per query).
    "full": BenchSize("full", 1000, 200, 50, 0.3, 3, 1024),
}


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how.

    Attributes:
        size: Key of :data:`SIZES`.
        preset: Model preset.
        random_weights: The preset's architecture with seeded random weights; quality is
            skipped (speed only).
        checkpoint: Local weights file for the preset (e.g. real CLIP weights).
        seed: Dataset seed.
        thresholds: Thresholds file for the decision figures; default: the preset's shipped one.
        scoring: Scoring overrides applied to every variant (``ScoringConfig.from_dict`` keys).
        variants: Names from :data:`VARIANTS`, each scored on the whole query set.
        quality: Run the quality part (forced off by ``random_weights``).
        speed: Run the speed part.
        device, precision, batch_size: Embedder options.
        threads: torch intra-op threads while indexing and scoring (None: the preset's choice).
        workers: Processes generating the dataset.
        n_brands, queries_per_class: Override the size's dataset figures.
        factory: FAISS factory string of the bench index.
        target_precision: Precision of the "recall at precision" figures.
        n_boot: Bootstrap replicates of the decision-figure intervals.
        logos: Logo collection of the set (``simple-icons``, ``crypto``, ``flags``); a
            collection with fewer distinct logos than the size asks for gives a smaller set
            (see :meth:`dataset_size`).
        backgrounds: ``photos`` or ``studio`` (drawn products on white; listings place them
            in photos or other studio shots with perspective).
        logo_boxes: Product references carry their logo's box (the brand says where it is).
    """

    size: str = "small"
    preset: str = "effnet-lite0"
    random_weights: bool = False
    checkpoint: str | None = None
    seed: int = 0
    thresholds: str | None = None
    scoring: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] = ("default",)
    quality: bool = True
    speed: bool = True
    device: str = "cpu"
    precision: str | None = None
    batch_size: int | None = None
    threads: int | None = None
    workers: int = 2
    n_brands: int | None = None
    queries_per_class: int | None = None
    factory: str = "Flat"
    target_precision: float = 0.9
    n_boot: int = 200
    logos: str = "simple-icons"
    backgrounds: str = "photos"
    logo_boxes: bool = False

    def validated(self) -> BenchConfig:
        """Checked copy; ``quality`` is off with random weights.

        Raises:
            ConfigError: Unknown size or variant, or an out-of-range number.
        """
        if self.size not in SIZES:
            raise ConfigError(f"unknown bench size {self.size!r}; choose from {sorted(SIZES)}")
        variants = tuple(dict.fromkeys(self.variants))  # drop repeats, keep order
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ConfigError(f"unknown or no variants {unknown}; choose from {list(VARIANTS)}")
        if not 0.0 < self.target_precision <= 1.0:
            raise ConfigError(f"target_precision must be in (0, 1], got {self.target_precision}")
        for name in ("threads", "n_brands", "queries_per_class"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.logos not in COLLECTIONS:
            raise ConfigError(
                f"unknown logo collection {self.logos!r}; choose from {list(COLLECTIONS)}"
            )
        if self.backgrounds not in BACKGROUNDS:
            raise ConfigError(
                f"unknown backgrounds {self.backgrounds!r}; choose from {list(BACKGROUNDS)}"
            )
        return replace(self, variants=variants, quality=self.quality and not self.random_weights)

    def dataset_size(self, usable: int | None = None) -> BenchSize:
        """The size's figures with the overrides; with ``usable`` (distinct logos in the
        collection) smaller than the size needs, the unindexed brands are capped at a sixth of
        them (the full size's share) and the indexed brands take the rest."""
        base = SIZES[self.size]
        size = replace(
            base,
            n_brands=self.n_brands or base.n_brands,
            queries_per_class=self.queries_per_class or base.queries_per_class,
        )
        if usable is not None and usable < size.n_brands + size.n_unindexed:
            n_unindexed = max(1, min(size.n_unindexed, usable // 6))
            size = replace(
                size, n_brands=min(size.n_brands, usable - n_unindexed), n_unindexed=n_unindexed
            )
        return size

    def set_tag(self) -> str:
        """Suffix of output names for a non-default set (``""`` for simple-icons on photos)."""
        parts = [p for p in (self.logos, self.backgrounds) if p not in ("simple-icons", "photos")]
        return "".join(f"-{p}" for p in parts)

    def embedder_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"device": self.device}
        for key in ("precision", "batch_size", "checkpoint"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return options


def config_dict(cfg: BenchConfig) -> dict[str, Any]:
    """The config as recorded in a result, with the dataset size it resolves to."""
    data = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    data["variants"] = list(cfg.variants)
    data["dataset_size"] = asdict(cfg.dataset_size())
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench options to a parser (shared by ``counterfeit bench`` and scripts/bench.py)."""
    parser.add_argument(
        "--out", default="bench-out", metavar="DIR", help="working folder (default: bench-out)"
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--model", default="effnet-lite0", metavar="PRESET", help="model preset")
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="local weights for the preset (e.g. real CLIP)"
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="random weights: speed figures only"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument(
        "--thresholds", metavar="FILE", help="thresholds file (default: the preset's)"
    )
    parser.add_argument(
        "--variants",
        default="default",
        help=f"comma-separated scoring variants: {', '.join(VARIANTS)} (default: default)",
    )
    parser.add_argument(
        "--scoring",
        default="{}",
        metavar="JSON",
        help='scoring overrides for every variant, e.g. \'{"verify": {"method": "orb"}}\'',
    )
    parser.add_argument("--no-quality", action="store_true", help="skip the quality part")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed part")
    parser.add_argument("--n-brands", type=int, help="override the size's brand count")
    parser.add_argument(
        "--queries-per-class", type=int, help="override the size's queries per class"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    parser.add_argument("--precision", help="fp32 | fp16 | bf16 (default: the preset's)")
    parser.add_argument(
        "--batch-size", type=int, help="images per model call (default: the preset's)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: the preset's choice)")
    parser.add_argument("--workers", type=int, default=2, help="dataset generation processes")
    parser.add_argument(
        "--logos",
        choices=COLLECTIONS,
        default="simple-icons",
        help="logo collection of the set (crypto and flags need their npm tarballs: "
        "scripts/setup_env.sh fetches them; default: simple-icons)",
    )
    parser.add_argument(
        "--backgrounds",
        choices=BACKGROUNDS,
        default="photos",
        help="photos: logos pasted on photos; studio: logos printed on drawn products on white "
        "(default: photos)",
    )
    parser.add_argument(
        "--logo-boxes",
        action="store_true",
        help="product references carry their logo's box (earlier benchmark runs did)",
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Turn parsed :func:`add_arguments` options into a validated BenchConfig.

    Raises:
        ConfigError: ``--scoring`` is not a JSON object, or another option is invalid.
    """
    try:
        scoring = json.loads(args.scoring)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--scoring is not valid JSON: {e}") from e
    if not isinstance(scoring, dict):
        raise ConfigError("--scoring must be a JSON object")
    return BenchConfig(
        size=args.size,
        preset=args.model,
        random_weights=args.random_weights,
        checkpoint=args.checkpoint,
        seed=args.seed,
        thresholds=args.thresholds,
        scoring=scoring,
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
        quality=not args.no_quality,
        speed=not args.no_speed,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        threads=args.threads,
        workers=args.workers,
        n_brands=args.n_brands,
        queries_per_class=args.queries_per_class,
        logos=args.logos,
        backgrounds=args.backgrounds,
        logo_boxes=args.logo_boxes,
    ).validated()
