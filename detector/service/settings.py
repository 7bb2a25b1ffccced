"""The service's limits and knobs (:class:`ServiceSettings`), checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and knobs of the service.

    Attributes:
        max_body_bytes: Largest request body (checked from Content-Length and while streaming).
        max_files: Most images per request (score or add).
        max_pixels: Largest image (width * height); None: the detector's own limit.
        request_timeout_s: Whole-request time limit (504 after it).
        max_batch_images: Most images per model call; 1 disables micro-batching.
        max_wait_ms: Longest wait of an idle model for more requests to batch.
        max_queue_images: Images allowed to wait for the model before 503 ``overloaded``.
        decode_workers: Threads decoding uploaded images.
        index_poll_s: Check the index on disk for a newer generation this often (0: never;
            useful with several worker processes, where an admin write reaches one of them).
        admin_token: Bearer token of the admin endpoints; None disables them.
        score_token: Bearer token required by /v1/score; None leaves scoring open.
        queue_url: Review queue database (SQLAlchemy URL or SQLite file): flagged verdicts are
            recorded there and the brand review portal is served under ``/review``; None: off.
        queue_margin: Also queue unflagged verdicts scoring within this margin below their
            threshold (marked ``near``); 0: only flagged ones.
        queue_image_dir: Where queued images are stored (default: beside a SQLite file).
    """

    max_body_bytes: int = 20 * 1024 * 1024
    max_files: int = 16
    max_pixels: int | None = None
    request_timeout_s: float = 30.0
    max_batch_images: int = 32
    max_wait_ms: float = 5.0
    max_queue_images: int = 1024
    decode_workers: int = 2
    index_poll_s: float = 0.0
    admin_token: str | None = field(default=None, repr=False)
    score_token: str | None = field(default=None, repr=False)
    max_field_chars: int = 256
    queue_url: str | None = None
    queue_margin: float = 0.0
    queue_image_dir: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_files",
            "max_batch_images",
            "max_queue_images",
            "decode_workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.max_wait_ms < 0 or self.index_poll_s < 0:
            raise ValueError("max_wait_ms and index_poll_s must be >= 0")
        if self.queue_margin < 0:
            raise ValueError(f"queue_margin must be >= 0, got {self.queue_margin}")
