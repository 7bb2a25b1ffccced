"""Operations routes: liveness, readiness, Prometheus metrics and service info."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from detector.service.index_jobs import index_summary
from detector.service.metrics import CONTENT_TYPE
from detector.service.schemas import API_VERSION, error_responses
from detector.service.state import ServiceState, in_pool, ready_detector


def add_ops_routes(app: FastAPI, state: ServiceState) -> None:
    """``GET /healthz``, ``/readyz``, ``/metrics`` and ``/v1/info`` (no token needed)."""
    settings = state.settings

    @app.get("/healthz", tags=["ops"], summary="Process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Model and index are loaded",
        responses=error_responses(503),
    )
    async def readyz() -> dict[str, Any]:
        detector = ready_detector(state)
        return {"status": "ready", "generation": getattr(detector.index, "generation", None)}

    @app.get(
        "/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse
    )
    async def metrics() -> PlainTextResponse:
        if state.batcher is not None:
            state.metrics.queued.set(state.batcher.queued_items)
        if state.review is not None:
            from detector.review.stats import brand_stats

            state.metrics.update_review(await in_pool(None, brand_stats, state.review.store))
        return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get(
        "/v1/info",
        tags=["ops"],
        summary="Model fingerprint, index counts, thresholds version",
        responses=error_responses(503),
    )
    async def info() -> dict[str, Any]:
        detector = ready_detector(state)
        index = await in_pool(state.admin_pool, index_summary, detector)
        return {
            "api_version": API_VERSION,
            "model": detector.fingerprint.to_dict(),
            "index": index,
            "thresholds": {
                "version": detector.thresholds.version,
                "score": getattr(detector.thresholds, "score", None),
            },
            "limits": {
                "max_files": settings.max_files,
                "max_body_bytes": settings.max_body_bytes,
                "max_pixels": settings.max_pixels or detector.config.max_pixels,
                "request_timeout_s": settings.request_timeout_s,
                "max_batch_images": settings.max_batch_images,
                "max_wait_ms": settings.max_wait_ms,
            },
            "admin_enabled": settings.admin_token is not None,
            "score_token_required": settings.score_token is not None,
        }
