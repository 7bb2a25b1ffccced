"""Model presets and backends. Importing this package reads no files and imports no torch.

Example:
    >>> from detector.models import get_preset, list_presets
    >>> get_preset("tiny-clip-test").backend
    'open_clip'
"""

from detector.models.registry import (
    DEFAULT_PRESET,
    ModelPreset,
    add_preset_file,
    get_preset,
    list_presets,
    load_preset_file,
    preset_dirs,
)

__all__ = [
    "DEFAULT_PRESET",
    "ModelPreset",
    "add_preset_file",
    "get_preset",
    "list_presets",
    "load_preset_file",
    "preset_dirs",
]
