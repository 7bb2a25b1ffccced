"""Run the scoring service with uvicorn: ``serve(index_dir, ...)`` (``counterfeit serve``).

Each worker process loads its own model and index. With several workers an admin write reaches
one of them; the others pick the new index generation up by polling (``index_poll_s``, 5 s by
default when ``workers > 1``).

Also runnable as ``python -m detector.service.server --index DIR`` (used by the load test).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.errors import ConfigError
from detector.service import auth

log = logging.getLogger(__name__)

# Worker processes started by uvicorn get their options through this variable (JSON).
OPTIONS_ENV = "COUNTERFEIT_SERVICE_OPTIONS"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def build_app(options: dict[str, Any]) -> Any:
    """Create the FastAPI app from plain options (what :func:`serve` passes to its workers).

    Args:
        options: ``index_dir``, ``detector`` (kwargs of :meth:`Detector.open`), ``settings``
            (fields of :class:`ServiceSettings` without tokens), ``admin_token_file``,
            ``score_token_file``.

    Raises:
        ConfigError: A token file is unreadable or a token too short.
    """
    from detector.scoring import Detector
    from detector.service.app import ServiceSettings, create_app

    settings = ServiceSettings(
        **options.get("settings", {}),
        admin_token=auth.load_token(auth.ADMIN_TOKEN_ENV, options.get("admin_token_file")),
        score_token=auth.load_token(auth.SCORE_TOKEN_ENV, options.get("score_token_file")),
    )
    index_dir = options["index_dir"]
    detector_kwargs = dict(options.get("detector", {}))
    return create_app(lambda: Detector.open(index_dir, **detector_kwargs), settings)


def app_from_environment() -> Any:
    """uvicorn factory for worker processes: reads the options :func:`serve` put in the environment."""
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        raise ConfigError(f"{OPTIONS_ENV} is not set; start the service with 'counterfeit serve'")
    return build_app(json.loads(raw))


def serve(
    index_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    thresholds: str | Path | None = None,
    device: str = "auto",
    precision: str | None = None,
    checkpoint: str | Path | None = None,
    batch_size: int | None = None,
    scoring: dict[str, Any] | None = None,
    admin_token_file: str | Path | None = None,
    score_token_file: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    log_level: str = "info",
) -> None:
    """Serve the scoring API until interrupted.

    Args:
        index_dir: Index directory (``counterfeit index build``), or a Milvus store
            (``milvus-lite:PATH``, ``milvus://HOST:PORT/COLLECTION?side=DIR``; docs/deployment.md).
        host, port: Where to listen. Binding beyond loopback without a score token logs a warning.
        workers: Processes; each loads the model once.
        thresholds, device, precision, checkpoint, batch_size: As for :meth:`Detector.open`.
        scoring: Scoring option overrides (``Detector.open(config=...)``), e.g.
            ``{"regions": {"enabled": False}, "verify": {"enabled": False}}``.
        admin_token_file: File holding the admin token (else ``$COUNTERFEIT_ADMIN_TOKEN``; admin
            endpoints are disabled when neither is set).
        score_token_file: File holding the scoring token (else ``$COUNTERFEIT_SCORE_TOKEN``;
            scoring is open when neither is set).
        settings: Overrides of :class:`~detector.service.app.ServiceSettings` fields, e.g.
            ``{"max_batch_images": 1, "request_timeout_s": 10}`` (tokens are not accepted here).
        log_level: uvicorn log level.

    Raises:
        ConfigError: Bad option, unreadable token file, or the index directory is missing.

    Example:
        >>> serve("refs-index", port=8080)  # doctest: +SKIP
    """
    import uvicorn

    from detector.service.app import ServiceSettings

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    from index.open import index_exists

    if not index_exists(index_dir):
        raise ConfigError(f"no index at {index_dir}; build one with 'counterfeit index build'")
    settings = dict(settings or {})
    known = {f.name for f in dataclasses.fields(ServiceSettings)} - {"admin_token", "score_token"}
    unknown = set(settings) - known
    if unknown:
        raise ConfigError(
            f"unknown service setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    if workers > 1 or str(index_dir).startswith("milvus://"):
        # Another process (worker, or the indexing writer of a shared Milvus store) writes:
        # poll its generation to rebuild what is derived from the references.
        settings.setdefault("index_poll_s", 5.0)
    detector_kwargs: dict[str, Any] = {"device": device}
    for key, value in (
        ("thresholds", thresholds),
        ("precision", precision),
        ("checkpoint", checkpoint),
        ("batch_size", batch_size),
        ("config", scoring),
    ):
        if value is not None:
            detector_kwargs[key] = str(value) if isinstance(value, Path) else value
    options = {
        "index_dir": str(index_dir),
        "detector": detector_kwargs,
        "settings": settings,
        "admin_token_file": str(admin_token_file) if admin_token_file else None,
        "score_token_file": str(score_token_file) if score_token_file else None,
    }
    app = build_app(options)  # validates settings and tokens now, before any worker starts
    state = app.state.service
    if state.settings.admin_token is None:
        log.warning(
            "admin endpoints are disabled (no %s / --admin-token-file)", auth.ADMIN_TOKEN_ENV
        )
    if host not in _LOOPBACK and state.settings.score_token is None:
        log.warning(
            "serving on %s without a scoring token: anyone who can reach it can score", host
        )
    common = {"host": host, "port": port, "log_level": log_level, "timeout_graceful_shutdown": 10}
    if workers == 1:
        uvicorn.run(app, **common)
        return
    os.environ[OPTIONS_ENV] = json.dumps(options)
    uvicorn.run(
        "detector.service.server:app_from_environment", factory=True, workers=workers, **common
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detector.service.server``: a thin runner (the CLI's ``serve`` is the main entry)."""
    p = argparse.ArgumentParser(
        prog="python -m detector.service.server", description="run the scoring service"
    )
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--thresholds", metavar="FILE")
    p.add_argument("--admin-token-file", metavar="FILE")
    p.add_argument("--score-token-file", metavar="FILE")
    p.add_argument(
        "--max-batch", type=int, help="images per model call (1 disables micro-batching)"
    )
    p.add_argument("--max-wait-ms", type=float, help="batching wait bound")
    p.add_argument("--timeout", type=float, help="per-request timeout in seconds")
    p.add_argument("--no-regions", action="store_true", help="whole frame only")
    p.add_argument("--no-verify", action="store_true", help="skip geometric verification")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings: dict[str, Any] = {}
    for option, key in (
        ("max_batch", "max_batch_images"),
        ("max_wait_ms", "max_wait_ms"),
        ("timeout", "request_timeout_s"),
    ):
        if getattr(args, option) is not None:
            settings[key] = getattr(args, option)
    scoring: dict[str, Any] = {}
    if args.no_regions:
        scoring["regions"] = {"enabled": False}
    if args.no_verify:
        scoring["verify"] = {"enabled": False}
    try:
        serve(
            args.index,
            args.host,
            args.port,
            args.workers,
            thresholds=args.thresholds,
            device=args.device,
            scoring=scoring or None,
            admin_token_file=args.admin_token_file,
            score_token_file=args.score_token_file,
            settings=settings,
            log_level=args.log_level,
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
