"""The scoring service's Prometheus metrics, declared with :mod:`prometheus_client`.

Each :class:`ServiceMetrics` registers its metrics in its own ``CollectorRegistry`` rather than
the library's global one, so several apps in one process (tests) never collide.

Several worker processes (``counterfeit serve --workers N``): set ``PROMETHEUS_MULTIPROC_DIR``
to an empty, writable directory in the environment of the server *before* it starts
(prometheus_client reads it at import). Every worker then writes its values there and
``GET /metrics``, whichever worker answers it, collects all of them with
:class:`prometheus_client.multiprocess.MultiProcessCollector`: counters and histograms add up
over workers, gauges merge by their ``multiprocess_mode`` below (the queue gauge is sampled when
a worker answers a scrape). Clear the directory between server runs.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE", "MULTIPROC_DIR_ENV", "ServiceMetrics"]

# What generate_latest writes (text format 0.0.4), as before the switch to prometheus_client.
# Not CONTENT_TYPE_LATEST: since prometheus_client 0.23 that names format 1.0.0, which only a
# scraper that asks for it should get.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: from a cached tiny-model answer to a slow CPU batch.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The service's metrics (names prefixed ``counterfeit_``), in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "counterfeit_http_requests_total",
            "HTTP requests by route template and status.",
            ("method", "route", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "counterfeit_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ("route",),
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.errors = Counter(
            "counterfeit_http_errors_total", "Error responses by error code.", ("code",), registry=r
        )
        self.images = Counter(
            "counterfeit_images_total",
            "Listing images received, by outcome.",
            ("outcome",),
            registry=r,
        )
        self.flags = Counter(
            "counterfeit_flags_total", "Images flagged, by brand.", ("brand",), registry=r
        )
        self.batch_size = Histogram(
            "counterfeit_model_batch_images",
            "Images per model call (micro-batch size).",
            registry=r,
            buckets=BATCH_SIZE_BUCKETS,
        )
        self.batch_seconds = Histogram(
            "counterfeit_model_batch_seconds",
            "Seconds per model call.",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        # Multiprocess merge modes: images waiting in all live workers; the newest index any
        # worker loaded; ready only while every live worker is.
        self.queued = Gauge(
            "counterfeit_queue_images",
            "Images waiting for the model.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.index_refs = Gauge(
            "counterfeit_index_references",
            "References in the loaded index.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.index_generation = Gauge(
            "counterfeit_index_generation",
            "Generation of the loaded index.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.reloads = Counter(
            "counterfeit_index_reloads_total",
            "Index reload attempts by result.",
            ("result",),
            registry=r,
        )
        self.ready = Gauge(
            "counterfeit_ready",
            "1 once the model and index are loaded.",
            registry=r,
            multiprocess_mode="livemin",
        )
        # The review queue (when the service has one): read from its database at each scrape,
        # so every instance reports the same figures.
        self.review_recorded = Counter(
            "counterfeit_review_recorded_total",
            "Verdicts this process recorded into the review queue, by brand.",
            ("brand",),
            registry=r,
        )
        self.review_backlog = Gauge(
            "counterfeit_review_backlog",
            "Review items waiting for a decision, by brand.",
            ("brand",),
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.review_decisions = Gauge(
            "counterfeit_review_decisions",
            "Review items by their current decision (confirmed, rejected, skipped), by brand.",
            ("brand", "decision"),
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._multiproc_dir = os.environ.get(MULTIPROC_DIR_ENV) or None

    def update_review(self, stats: list) -> None:  # list[detector.review.stats.BrandStats]
        """Set the review gauges from the queue's per-brand statistics."""
        for s in stats:
            self.review_backlog.labels(brand=s.brand).set(s.backlog)
            for decision in ("confirmed", "rejected", "skipped"):
                self.review_decisions.labels(brand=s.brand, decision=decision).set(getattr(s, decision))

    def render(self) -> bytes:
        """All metrics in the Prometheus text format (every worker's when multiprocess)."""
        if self._multiproc_dir is None:
            return generate_latest(self.registry)
        # A fresh registry per scrape, as prometheus_client prescribes: the collector reads the
        # workers' files, so this process' own registry must not be collected again.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._multiproc_dir)
        return generate_latest(registry)

    def close(self) -> None:
        """On shutdown: drop this process' live gauges from the multiprocess directory."""
        if self._multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), path=self._multiproc_dir)
