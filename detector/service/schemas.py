"""The API's version and its response models (they document the answers in OpenAPI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

API_VERSION = "v1"


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. 'invalid_image'.")
    message: str = Field(description="What went wrong and what to do about it.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class MatchModel(BaseModel):
    ref_id: int
    brand: str
    kind: str
    product_id: str | None
    score: float
    source: str
    cosine: float
    inliers: int | None
    box: list[int] | None
    shape_iou: float | None = None
    logo_area: str | None = None
    mirrored: bool = False
    verified: bool = False
    signals: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Evidence of signals beyond the built-in ones, by signal name."
    )


class VerdictModel(BaseModel):
    image: str = Field(description="The uploaded file name (or file<N>).")
    flagged: bool
    brand: str | None
    score: float | None
    threshold: float | None
    threshold_source: str | None
    matches: list[MatchModel]
    box: list[int] | None = Field(description="Evidence box (x0, y0, x1, y1) in the listing image.")
    error: str | None = Field(description="Set when this image could not be scored.")


class ScoreResponse(BaseModel):
    listing_id: str | None
    seller_id: str | None
    results: list[VerdictModel]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entry: these statuses answer an :class:`ErrorResponse`."""
    return {s: {"model": ErrorResponse} for s in statuses}
