"""open_clip backend: build a CLIP model from a preset and keep its image tower.

Weights are loaded with open_clip's own ``load_checkpoint`` (``torch.load(weights_only=True)``
or safetensors; ``{"state_dict": ...}`` and ``module.`` prefixes unwrapped) with
``strict=True``, so a checkpoint for another architecture is refused instead of half-loaded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from detector.errors import ConfigError, WeightsUnavailableError
from detector.models.registry import ModelPreset
from detector.models.weights import ResolvedWeights

if TYPE_CHECKING:
    import torch

_registered: set[str] = set()
_register_lock = threading.Lock()


def register_model_config(preset: ModelPreset) -> None:
    """Make a preset's custom architecture (``model_config``) known to open_clip; idempotent."""
    if not preset.model_config:
        return
    with _register_lock:
        if preset.model_config in _registered:
            return
        import open_clip

        open_clip.add_model_config(preset.model_config)
        _registered.add(preset.model_config)


def build_clip_model(preset: ModelPreset, seed: int) -> torch.nn.Module:
    """The full open_clip model (image and text towers) with seeded random weights, in eval mode.

    The same seed gives bit-identical weights in every process: the init runs on CPU inside a
    forked RNG state, so the caller's global torch RNG is left untouched.

    Raises:
        ConfigError: open_clip does not know the architecture.
    """
    import open_clip
    import torch

    register_model_config(preset)
    if open_clip.get_model_config(preset.arch) is None:
        raise ConfigError(
            f"preset {preset.name!r}: open_clip has no architecture {preset.arch!r} "
            "(set model_config in the preset to add one)"
        )
    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
        torch.manual_seed(seed)
        model = open_clip.create_model(preset.arch, pretrained=None, device="cpu")
    return model.eval()


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns "initialized randomly" on the root logger even when we load weights next."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    flt = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def load_image_tower(preset: ModelPreset, weights: ResolvedWeights) -> torch.nn.Module:
    """Build the model, load its weights and return the image tower (features, not normalised).

    Args:
        preset: An open_clip preset.
        weights: Resolved weights (a file, or random init).

    Returns:
        ``model.visual``: maps (n, 3, S, S) float tensors to (n, dim) features.

    Raises:
        WeightsUnavailableError: The checkpoint file cannot be read.
        ConfigError: The checkpoint does not fit the architecture, or the preset's ``dim``
            disagrees with the model.
    """
    model = build_clip_model(preset, weights.seed)
    if weights.path is not None:
        _load_checkpoint(model, preset, weights)
    visual = model.visual
    out_dim = getattr(visual, "output_dim", None)
    if out_dim is not None and out_dim != preset.dim:
        raise ConfigError(
            f"preset {preset.name!r} says dim={preset.dim} but the model outputs {out_dim}"
        )
    # Only the image tower is kept: the text tower is ~40% of ViT-B parameters and unused here.
    return visual.eval()


def _load_checkpoint(model: torch.nn.Module, preset: ModelPreset, weights: ResolvedWeights) -> None:
    import pickle

    import open_clip

    path = weights.path
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except RuntimeError as e:
        # torch reports key/shape mismatches of load_state_dict(strict=True) this way.
        if "Error(s) in loading state_dict" in str(e):
            raise ConfigError(
                f"checkpoint {path} does not fit {preset.arch_id} (preset {preset.name!r}): "
                f"{_brief(e)}"
            ) from e
        raise WeightsUnavailableError(f"cannot load checkpoint {path}: {_brief(e)}") from e
    except (OSError, EOFError, pickle.UnpicklingError, StopIteration, KeyError, ValueError) as e:
        raise WeightsUnavailableError(
            f"cannot read checkpoint {path} (not a torch state dict or safetensors file?): "
            f"{_brief(e)}"
        ) from e


def _brief(e: BaseException, limit: int = 400) -> str:
    """The exception text on one line, cut to ``limit`` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
