"""What one app's routes, middleware and lifecycle share: the detector, pools, batcher, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from detector.service.batcher import MicroBatcher
from detector.service.errors import ApiError
from detector.service.metrics import ServiceMetrics
from detector.service.settings import ServiceSettings


class ScoringBackend(Protocol):
    """What the service needs from a detector (:class:`~detector.scoring.Detector` has it)."""

    embedder: Any
    thresholds: Any
    config: Any

    @property
    def index(self) -> Any: ...

    @property
    def fingerprint(self) -> Any: ...

    def analyse_images(self, images: Sequence[Image.Image], names: Sequence[str]) -> list[Any]: ...

    def reload_index(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class ServiceState:
    """One app's shared state (``app.state.service``); pools and batcher exist while it runs."""

    settings: ServiceSettings
    metrics: ServiceMetrics
    detector: ScoringBackend | None = None
    load_error: str | None = None
    model_pool: ThreadPoolExecutor | None = None
    decode_pool: ThreadPoolExecutor | None = None
    admin_pool: ThreadPoolExecutor | None = None
    batcher: MicroBatcher[tuple[Image.Image, str], Any] | None = None
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    route_paths: frozenset[str] = frozenset()
    review: Any = None  # detector.review.recorder.QueueRecorder when a review queue is set


def ready_detector(state: ServiceState) -> ScoringBackend:
    """The loaded detector; 503 ``load_failed`` or ``not_ready`` (with Retry-After) until then."""
    if state.detector is None:
        if state.load_error:
            raise ApiError(
                503, "load_failed", f"the detector could not be loaded: {state.load_error}"
            )
        raise ApiError(
            503,
            "not_ready",
            "the model and index are still loading; retry shortly",
            headers={"Retry-After": "1"},
        )
    return state.detector


async def in_pool(pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on ``pool`` so the event loop never blocks on it."""
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
