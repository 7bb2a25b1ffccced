"""Connecting to Ray and choosing the resources of the model actors.

Ray is an optional dependency (the ``ray`` extra): it is imported here, when a Ray job runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from detector.errors import ConfigError

log = logging.getLogger(__name__)

#: CPUs each model actor reserves without a GPU. Below one so that decode tasks always find
#: a free slot: a Dataset whose actors take every CPU slot hangs (ray issue 44687).
ACTOR_CPUS = 0.5


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 (the Data library ships in ray[data])
    except ImportError as e:
        raise ConfigError("--engine ray needs Ray Data: pip install 'counterfeit-detector[ray]'") from e
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Connect to the cluster at ``address`` (``ray://...``, ``auto``, ``host:port``), or start a
    local Ray when None; an already initialised Ray (tests, notebooks) is used as it is and
    left running. Yields the ``ray`` module."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            options["address"] = address
        ray.init(**options)
        started = True
    context = ray.data.DataContext.get_current()
    # Chunks are committed in input order; preserving it keeps the driver's buffer small.
    context.execution_options.preserve_order = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class ActorResources:
    """What one model actor asks of the cluster, and how many there are."""

    actors: int
    num_cpus: float
    num_gpus: float
    device: str  # the embedder's device inside the actor

    def map_options(self, ray: Any) -> dict[str, Any]:
        """Keyword arguments of ``Dataset.map_batches`` for a class-based (actor) stage."""
        return {
            "compute": ray.data.ActorPoolStrategy(size=self.actors),
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
        }


def actor_resources(ray: Any, actors: int | None, device: str = "auto") -> ActorResources:
    """One actor per GPU of the cluster, each with ``num_gpus=1``, when the cluster has GPUs and
    ``device`` is not ``cpu``; else ``actors`` (default 1) CPU actors of :data:`ACTOR_CPUS`.

    Ray shows each GPU actor only its own GPU (``CUDA_VISIBLE_DEVICES``), so inside the actor
    the device is ``cuda`` whatever ``cuda:N`` was asked for. The driver needs no GPU.
    """
    gpus = 0 if device == "cpu" else int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return ActorResources(actors or gpus, 1.0, 1.0, "cuda")
    if device.startswith("cuda"):
        raise ConfigError(f"--device {device}: the Ray cluster has no GPU")
    return ActorResources(actors or 1, ACTOR_CPUS, 0.0, "cpu")
