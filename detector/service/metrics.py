"""Service metrics in the Prometheus text exposition format (version 0.0.4).

A few dozen lines instead of a dependency: counters, gauges and histograms with labels, safe to
update from the event loop and the model thread, rendered on ``GET /metrics``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a cached tiny-model answer to a slow CPU batch.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

LabelKey = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(
    names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None
) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{_escape(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}" for k, v in items]


class Gauge(_Metric):
    """A value that goes up and down (index size, queue length)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelKey, float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}" for k, v in items]


class Histogram(_Metric):
    """Cumulative buckets, sum and count per label set."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        if list(buckets) != sorted(buckets) or not buckets:
            raise ValueError("buckets must be a non-empty increasing sequence")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts: dict[LabelKey, list[int]] = {}
        self._sums: dict[LabelKey, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        slot = bisect.bisect_left(self.buckets, value)  # first bucket with bound >= value
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[slot] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        with self._lock:
            return sum(self._counts.get(self._key(labels), []))

    def render(self) -> list[str]:
        with self._lock:
            snapshot = sorted((k, list(c), self._sums[k]) for k, c in self._counts.items())
        lines = []
        for key, counts, total in snapshot:
            cumulative = 0
            for bound, n in zip((*self.buckets, math.inf), counts):
                cumulative += n
                le = _labels(self.labelnames, key, ("le", _format_value(bound)))
                lines.append(f"{self.name}_bucket{le} {cumulative}")
            plain = _labels(self.labelnames, key)
            lines.append(f"{self.name}_sum{plain} {_format_value(total)}")
            lines.append(f"{self.name}_count{plain} {cumulative}")
        return lines


class Registry:
    """Holds metrics in registration order and renders them all."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help_text, labelnames)
        self._add(metric)
        return metric

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help_text, labelnames)
        self._add(metric)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        metric = Histogram(name, help_text, labelnames, buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.header())
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class ServiceMetrics:
    """The scoring service's metrics (names prefixed ``counterfeit_``)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.counter(
            "counterfeit_http_requests_total",
            "HTTP requests by route template and status.",
            ("method", "route", "status"),
        )
        self.latency = r.histogram(
            "counterfeit_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ("route",),
        )
        self.errors = r.counter(
            "counterfeit_http_errors_total", "Error responses by error code.", ("code",)
        )
        self.images = r.counter(
            "counterfeit_images_total", "Listing images received, by outcome.", ("outcome",)
        )
        self.flags = r.counter("counterfeit_flags_total", "Images flagged, by brand.", ("brand",))
        self.batch_size = r.histogram(
            "counterfeit_model_batch_images",
            "Images per model call (micro-batch size).",
            (),
            BATCH_SIZE_BUCKETS,
        )
        self.batch_seconds = r.histogram(
            "counterfeit_model_batch_seconds", "Seconds per model call."
        )
        self.queued = r.gauge("counterfeit_queue_images", "Images waiting for the model.")
        self.index_refs = r.gauge("counterfeit_index_references", "References in the loaded index.")
        self.index_generation = r.gauge(
            "counterfeit_index_generation", "Generation of the loaded index."
        )
        self.reloads = r.counter(
            "counterfeit_index_reloads_total", "Index reload attempts by result.", ("result",)
        )
        self.ready = r.gauge("counterfeit_ready", "1 once the model and index are loaded.")

    def render(self) -> str:
        return self.registry.render()
