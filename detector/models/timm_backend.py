"""timm backend: an ImageNet CNN whose globally pooled features are the embedding.

Checkpoints are read with ``torch.load(weights_only=True)`` (or safetensors) and loaded with
``strict=True``; EfficientNet-PyTorch-named state dicts (the ``effnet-lite0`` package weights)
are renamed to timm's names first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.errors import ConfigError, WeightsUnavailableError
from detector.models.effnet_weights import (
    efficientnet_pytorch_to_timm,
    is_efficientnet_pytorch_state_dict,
)
from detector.models.registry import ModelPreset
from detector.models.weights import ResolvedWeights

if TYPE_CHECKING:
    import torch


def _feature_module_class() -> type:
    import torch

    class PooledFeatures(torch.nn.Module):
        """A timm classifier: ``forward`` gives pooled pre-logit features, ``classify`` logits."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net
            self.output_dim = int(net.num_features)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

        def classify(self, x: torch.Tensor) -> torch.Tensor:
            """ImageNet logits (used to check that trained weights really loaded)."""
            return self.net(x)

    return PooledFeatures


def load_feature_model(preset: ModelPreset, weights: ResolvedWeights) -> torch.nn.Module:
    """Build a timm model from the preset, load its weights, wrap it to output pooled features.

    Args:
        preset: A timm preset.
        weights: Resolved weights (a file, or random init).

    Returns:
        A module mapping (n, 3, S, S) tensors to (n, dim) features; ``.classify(x)`` gives logits.

    Raises:
        WeightsUnavailableError: The checkpoint file cannot be read.
        ConfigError: Unknown architecture, or a checkpoint/dim that does not fit it.
    """
    import timm
    import torch

    if not timm.is_model(preset.arch):
        raise ConfigError(f"preset {preset.name!r}: timm has no model {preset.arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(weights.seed)
        net = timm.create_model(preset.arch, pretrained=False)
    if weights.path is not None:
        state = _read_state_dict(weights.path)
        if is_efficientnet_pytorch_state_dict(state):
            try:
                state = efficientnet_pytorch_to_timm(state)
            except KeyError as e:
                raise ConfigError(
                    f"checkpoint {weights.path} is not EfficientNet-Lite0-shaped: {e}"
                ) from e
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            brief = " ".join(str(e).split())[:400]
            raise ConfigError(
                f"checkpoint {weights.path} does not fit {preset.arch_id} "
                f"(preset {preset.name!r}): {brief}"
            ) from e
    model = _feature_module_class()(net).eval()
    if model.output_dim != preset.dim:
        raise ConfigError(
            f"preset {preset.name!r} says dim={preset.dim} but {preset.arch} outputs "
            f"{model.output_dim}"
        )
    return model


def _read_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, ValueError) as e:
        brief = " ".join(str(e).split())[:400]
        raise WeightsUnavailableError(f"cannot read checkpoint {path}: {brief}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise WeightsUnavailableError(f"checkpoint {path} holds no state dict")
    # DataParallel / DDP checkpoints prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state
