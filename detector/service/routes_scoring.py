"""The scoring route, ``POST /v1/score``: uploads are decoded on a pool and micro-batched into
model calls; one verdict per image, in order."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image

from detector.errors import ImageLoadError
from detector.service.batcher import BatcherClosedError, BatcherOverloadedError
from detector.service.errors import ApiError
from detector.service.http_auth import auth_dependency
from detector.service.schemas import ScoreResponse, error_responses
from detector.service.state import ServiceState, in_pool, ready_detector
from detector.service.uploads import check_file_count, check_text, decode_images, read_uploads
from detector.verdict import Verdict

log = logging.getLogger(__name__)


def add_scoring_routes(app: FastAPI, state: ServiceState) -> None:
    """``POST /v1/score`` (needs the scoring token when one is set)."""
    settings = state.settings
    require_score = auth_dependency(settings, admin=False)

    @app.post(
        "/v1/score",
        tags=["scoring"],
        summary="Score listing images",
        response_model=ScoreResponse,
        responses=error_responses(401, 403, 413, 422, 503, 504),
        dependencies=[Depends(require_score)],
    )
    async def score(
        files: Annotated[
            list[UploadFile],
            File(description="One or more listing images (JPEG, PNG, WebP, GIF, BMP, TIFF)."),
        ],
        listing_id: Annotated[str | None, Form(description="Passed through to the answer.")] = None,
        seller_id: Annotated[str | None, Form(description="Passed through to the answer.")] = None,
    ) -> JSONResponse:
        """Score 1..max_files images. Each image gets a verdict, in order; an unreadable image
        gets ``error`` set and the others are still scored. 422 when no image could be read."""
        detector = ready_detector(state)
        listing_id = check_text(listing_id, "listing_id", settings.max_field_chars)
        seller_id = check_text(seller_id, "seller_id", settings.max_field_chars)
        check_file_count(files, settings)
        max_pixels = settings.max_pixels or detector.config.max_pixels
        blobs: list[tuple[str, bytes]] = []
        decoded: list[Image.Image | ImageLoadError] = []

        async def prepare() -> list[tuple[Image.Image, str]]:
            blobs.extend(await read_uploads(files))
            decoded.extend(await in_pool(state.decode_pool, decode_images, blobs, max_pixels))
            return [
                (img, name)
                for (name, _), img in zip(blobs, decoded)
                if isinstance(img, Image.Image)
            ]

        assert state.batcher is not None
        try:
            # Submitting the preparation (not its result) announces this request to the batcher,
            # so an idle model waits for it briefly instead of running a batch without it.
            analyses = iter(await state.batcher.submit(prepare()))
        except ApiError:
            raise
        except BatcherOverloadedError as e:
            raise ApiError(503, "overloaded", str(e), headers={"Retry-After": "1"}) from e
        except BatcherClosedError as e:
            raise ApiError(503, "shutting_down", str(e)) from e
        except Exception as e:
            log.exception("scoring failed")
            raise ApiError(500, "scoring_failed", f"scoring failed: {type(e).__name__}") from e
        results = []
        verdicts = []
        for (name, _), img in zip(blobs, decoded):
            verdict = (
                Verdict.failed(name, img.reason)
                if isinstance(img, ImageLoadError)
                else next(analyses).verdict
            )
            results.append(verdict.to_dict())
            verdicts.append(verdict)
            _count_verdict(state, verdict)
        if state.review is not None:
            await in_pool(None, _record, state, detector, verdicts, [d for _, d in blobs],
                          listing_id, seller_id)
        body = {"listing_id": listing_id, "seller_id": seller_id, "results": results}
        if all(isinstance(img, ImageLoadError) for img in decoded):
            raise ApiError(
                422, "invalid_image", f"no image could be read: {results[0]['error']}", extra=body
            )
        return JSONResponse(body)


def _record(state: ServiceState, detector: object, verdicts: list[Verdict], data: list[bytes],
            listing_id: str | None, seller_id: str | None) -> None:
    """Queue the flagged (and near-threshold) verdicts for review; a failure is logged and
    counted, never fails the scoring answer."""
    from detector.review.recorder import RecordContext

    context = RecordContext.of(detector)
    for verdict, blob in zip(verdicts, data):
        try:
            if state.review.record(verdict, context, image=blob, listing_id=listing_id,
                                   seller_id=seller_id) is not None:
                state.metrics.review_recorded.labels(brand=verdict.brand or "").inc()
        except Exception:
            log.exception("could not queue the verdict of %s for review", verdict.image)
            state.metrics.errors.labels(code="review_record_failed").inc()


def _count_verdict(state: ServiceState, verdict: Verdict) -> None:
    if verdict.error is not None:
        state.metrics.images.labels(outcome="error").inc()
        return
    outcome = "flagged" if verdict.flagged else "clean"
    state.metrics.images.labels(outcome=outcome).inc()
    if verdict.flagged and verdict.brand is not None:
        state.metrics.flags.labels(brand=verdict.brand).inc()
