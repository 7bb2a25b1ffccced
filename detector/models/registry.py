"""Model presets: named JSON files under ``configs/models/``, resolved by a small registry.

A preset says everything that decides what an embedding *means*: backend and architecture,
where the weights come from, the preprocessing and the output dimension. Two vector sets
are comparable only when all of it is identical (see ``Embedder.fingerprint``).

Preset files are found in the shipped ``configs/models`` (the checkout's ``configs/`` or a
wheel's package data, see :func:`detector.configs.configs_root`) and, when the environment
variable ``COUNTERFEIT_CONFIG_DIR`` is set, in ``$COUNTERFEIT_CONFIG_DIR/models`` (or in that
directory itself when it has no ``models`` sub-folder); files there and files added with
:func:`add_preset_file` override built-in presets of the same name.

This module reads JSON only; it never imports torch.

Example:
    >>> from detector.models import get_preset, list_presets
    >>> "clip-vit-b-32" in list_presets()
    True
    >>> get_preset("clip-vit-b-32").dim
    512
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.configs import configs_root
from detector.errors import ConfigError

# The source checkout's root (meaningful only when running from a checkout; installed from a
# wheel the shipped files are elsewhere: use detector.configs.configs_root()).
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_PRESET_DIR = configs_root() / "models"
CONFIG_DIR_ENV = "COUNTERFEIT_CONFIG_DIR"
DEFAULT_PRESET = "clip-vit-b-32"

BACKENDS = ("open_clip", "timm")
WEIGHT_TYPES = ("open_clip_tag", "hf_hub", "file", "random", "package")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
RESIZE_MODES = ("shortest", "longest", "squash")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

# What each weights type must name (besides "type").
_WEIGHT_KEYS: dict[str, tuple[str, ...]] = {
    "open_clip_tag": ("tag",),
    "hf_hub": ("repo",),
    "file": ("path",),
    "random": ("seed",),
    "package": ("package", "resource", "pip"),
}


@dataclass(frozen=True)
class ModelPreset:
    """One model preset (see ``configs/models/*.json``).

    Attributes:
        name: Registry name, e.g. ``"clip-vit-b-32"``.
        backend: ``"open_clip"`` or ``"timm"``.
        arch: open_clip model name (``"ViT-B-32"``) or timm model name.
        weights: Where weights come from: ``{"type": "open_clip_tag", "tag": ...}``,
            ``{"type": "hf_hub", "repo": "org/name", "filename"?: ...}``,
            ``{"type": "file", "path": ...}`` (relative to the preset file),
            ``{"type": "random", "seed": int}`` or
            ``{"type": "package", "package": ..., "resource": ..., "pip": ...}``.
        image_size: Square input side in pixels.
        mean: Per-channel normalisation mean (RGB, 0..1 scale).
        std: Per-channel normalisation std.
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        resize_mode: ``"shortest"`` (resize the short side, centre crop; open_clip's default),
            ``"longest"`` (resize the long side, pad to a square with white) or ``"squash"``.
        dim: Output embedding dimension.
        defaults: Run-time defaults that do not change the vectors' meaning (the fast path
            stays within cosine 0.998 of the plain fp32 path): ``batch_size`` (int),
            ``precision`` (``"auto"|"fp32"|"fp16"|"bf16"``), ``decode_workers`` (threads
            decoding and resizing while the model runs; 0 = inline), ``draft`` (reduced-size
            JPEG decoding to >= 2x the input size), ``channels_last`` (memory format for CNNs),
            ``gpu_decode`` (JPEG decoding and resizing on the GPU when the model runs on CUDA)
            and ``num_threads`` (torch intra-op threads: an int, ``"auto"`` = the CPUs left
            after the decode workers, or null to leave torch's setting alone).
            Absent keys mean "off" (the plain path).
        description: Free text.
        model_config: For open_clip presets whose architecture is not built into open_clip:
            path of an open_clip model-config JSON (registered with ``open_clip.add_model_config``).
        source: The preset file this came from.
    """

    name: str
    backend: str
    arch: str
    weights: dict[str, Any]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    dim: int
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    model_config: str | None = None
    source: str | None = None

    @property
    def arch_id(self) -> str:
        """Backend-qualified architecture, e.g. ``"open_clip:ViT-B-32"`` (fingerprint ``arch``)."""
        return f"{self.backend}:{self.arch}"

    @property
    def batch_size(self) -> int:
        return int(self.defaults.get("batch_size", 32))

    @property
    def precision(self) -> str:
        return str(self.defaults.get("precision", "auto"))

    @property
    def decode_workers(self) -> int:
        return int(self.defaults.get("decode_workers", 0))

    @property
    def draft(self) -> bool:
        return bool(self.defaults.get("draft", False))

    @property
    def channels_last(self) -> bool:
        return bool(self.defaults.get("channels_last", False))

    @property
    def gpu_decode(self) -> bool:
        return bool(self.defaults.get("gpu_decode", False))

    @property
    def num_threads(self) -> int | str | None:
        value = self.defaults.get("num_threads")
        return value if value is None or value == "auto" else int(value)

    def preprocess_config(self) -> dict[str, Any]:
        """The preprocessing as a plain dict (the fingerprint stores its canonical JSON)."""
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }


_lock = threading.Lock()
_added: dict[str, ModelPreset] = {}  # from add_preset_file, highest priority
_scanned: dict[str, ModelPreset] | None = None


def preset_dirs() -> list[Path]:
    """Directories searched for preset files, lowest priority first."""
    dirs = [BUILTIN_PRESET_DIR]
    extra = os.environ.get(CONFIG_DIR_ENV)
    if extra:
        root = Path(extra).expanduser()
        dirs.append(root / "models" if (root / "models").is_dir() else root)
    return dirs


def list_presets() -> list[str]:
    """Names of all known presets, sorted."""
    return sorted(_all_presets())


def get_preset(name: str) -> ModelPreset:
    """Resolve a preset by name, or load it from a ``.json`` path.

    Args:
        name: A registered preset name, or the path of a preset JSON file.

    Returns:
        The preset.

    Raises:
        ConfigError: Unknown name (the message lists the known ones) or invalid file.

    Example:
        >>> get_preset("tiny-clip-test").image_size
        64
    """
    presets = _all_presets()
    if name in presets:
        return presets[name]
    if name.endswith(".json") and Path(name).expanduser().is_file():
        return load_preset_file(name)
    raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(presets))}")


def add_preset_file(path: str | os.PathLike) -> ModelPreset:
    """Register a preset file; it overrides any preset of the same name.

    Args:
        path: A preset JSON file.

    Returns:
        The registered preset.

    Raises:
        ConfigError: Missing or invalid file.
    """
    preset = load_preset_file(path)
    with _lock:
        _added[preset.name] = preset
    return preset


def load_preset_file(path: str | os.PathLike) -> ModelPreset:
    """Parse and validate one preset file without registering it.

    Raises:
        ConfigError: Missing file, invalid JSON, or a field that is missing or out of range.
    """
    path = Path(path).expanduser().resolve()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"model preset file not found: {path}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read model preset {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"model preset {path}: top level must be a JSON object")
    return _parse(raw, path)


def _reset_registry() -> None:
    """Forget scanned and added presets (tests; after changing ``COUNTERFEIT_CONFIG_DIR``)."""
    global _scanned
    with _lock:
        _scanned = None
        _added.clear()


def _all_presets() -> dict[str, ModelPreset]:
    global _scanned
    with _lock:
        if _scanned is None:
            found: dict[str, ModelPreset] = {}
            for directory in preset_dirs():
                if directory.is_dir():
                    for file in sorted(directory.glob("*.json")):
                        preset = load_preset_file(file)
                        found[preset.name] = preset
            _scanned = found
        return {**_scanned, **_added}


RUNTIME_DEFAULTS = (
    "batch_size",
    "precision",
    "decode_workers",
    "draft",
    "channels_last",
    "gpu_decode",
    "num_threads",
    # Read by the scorer and the indexing job, not the embedder (see detector.scoring).
    "scoring",
    "reference_prep",
)


def _check_runtime_defaults(defaults: dict[str, Any], where: str) -> None:
    unknown = sorted(set(defaults) - set(RUNTIME_DEFAULTS))
    if unknown:
        raise ConfigError(f"{where}: unknown defaults {unknown}; known: {list(RUNTIME_DEFAULTS)}")
    workers = defaults.get("decode_workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"{where}: defaults.decode_workers must be an integer >= 0")
    for key in ("draft", "channels_last", "gpu_decode"):
        if not isinstance(defaults.get(key, False), bool):
            raise ConfigError(f"{where}: defaults.{key} must be true or false")
    threads = defaults.get("num_threads")
    if (
        threads is not None
        and threads != "auto"
        and (not isinstance(threads, int) or isinstance(threads, bool) or threads <= 0)
    ):
        raise ConfigError(
            f'{where}: defaults.num_threads must be a positive integer, "auto" or null'
        )


def _parse(raw: dict[str, Any], path: Path) -> ModelPreset:
    where = f"model preset {path}"

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            raise ConfigError(f"{where}: missing field {key!r}")
        value = raw[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{where}: field {key!r} has the wrong type ({value!r})")
        return value

    def choice(key: str, allowed: tuple[str, ...]) -> str:
        value = need(key, str)
        if value not in allowed:
            raise ConfigError(f"{where}: {key} must be one of {allowed}, got {value!r}")
        return str(value)

    def triple(key: str, positive: bool) -> tuple[float, float, float]:
        value = need(key, list)
        if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of 3 numbers, got {value!r}")
        if positive and not all(v > 0 for v in value):
            raise ConfigError(f"{where}: {key} values must be > 0, got {value!r}")
        return (float(value[0]), float(value[1]), float(value[2]))

    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string")
    weights = need("weights", dict)
    wtype = weights.get("type")
    if wtype not in WEIGHT_TYPES:
        raise ConfigError(f"{where}: weights.type must be one of {WEIGHT_TYPES}, got {wtype!r}")
    missing = [k for k in _WEIGHT_KEYS[wtype] if k not in weights]
    if missing:
        raise ConfigError(f"{where}: weights of type {wtype!r} need {missing}")
    weights = dict(weights)
    if wtype == "random" and not isinstance(weights["seed"], int):
        raise ConfigError(f"{where}: weights.seed must be an integer")
    if wtype == "file":
        # Relative checkpoint paths are relative to the preset file, not to the working directory.
        weights["path"] = str((path.parent / Path(weights["path"]).expanduser()).resolve())

    image_size = need("image_size", int)
    dim = need("dim", int)
    if image_size <= 0 or dim <= 0:
        raise ConfigError(f"{where}: image_size and dim must be > 0")
    defaults = dict(raw.get("defaults", {}))
    batch_size = defaults.get("batch_size", 32)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ConfigError(f"{where}: defaults.batch_size must be a positive integer")
    if defaults.get("precision", "auto") not in PRECISIONS:
        raise ConfigError(f"{where}: defaults.precision must be one of {PRECISIONS}")
    _check_runtime_defaults(defaults, where)

    model_config = raw.get("model_config")
    if model_config is not None:
        cfg_path = (path.parent / Path(str(model_config))).resolve()
        if not cfg_path.is_file():
            raise ConfigError(f"{where}: model_config file not found: {cfg_path}")
        model_config = str(cfg_path)

    return ModelPreset(
        name=name,
        backend=choice("backend", BACKENDS),
        arch=need("arch", str),
        weights=weights,
        image_size=image_size,
        mean=triple("mean", positive=False),
        std=triple("std", positive=True),
        interpolation=choice("interpolation", INTERPOLATIONS),
        resize_mode=choice("resize_mode", RESIZE_MODES),
        dim=dim,
        defaults=defaults,
        description=str(raw.get("description", "")),
        model_config=model_config,
        source=str(path),
    )
