"""detector.images: every source kind, mode conversion, EXIF, bombs and broken data."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from detector.errors import ImageLoadError
from detector.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    file_sha256,
    is_image_path,
    load_image,
    read_bytes,
    sha256_bytes,
    to_rgb,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def red_left_blue_right(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue: makes rotations and flips easy to tell apart."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = RED
    arr[:, w // 2 :] = BLUE
    return Image.fromarray(arr)


def close_to(pixel, colour, tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour, strict=True))


# --- sources ---------------------------------------------------------------------------------


def test_path_bytes_stream_and_pil_sources_agree(tmp_path):
    data = encode(red_left_blue_right(), "PNG")
    path = tmp_path / "img.png"
    path.write_bytes(data)
    results = [
        load_image(path),
        load_image(str(path)),
        load_image(data),
        load_image(io.BytesIO(data)),
        load_image(Image.open(io.BytesIO(data))),
    ]
    ref = np.asarray(results[0])
    assert ref.shape == (20, 40, 3)
    for img in results:
        assert img.mode == "RGB"
        assert np.array_equal(np.asarray(img), ref)


def test_non_seekable_stream_is_buffered():
    data = encode(red_left_blue_right(), "PNG")

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, b) -> int:
            chunk = self._buf.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    img = load_image(io.BufferedReader(Pipe()), name="pipe")
    assert img.size == (40, 20)


def test_result_is_detached_from_closed_file(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(red_left_blue_right(), "PNG"))
    img = load_image(path)
    assert img.getpixel((0, 0)) == RED  # still usable after load_image closed the file


def test_bad_source_type():
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, kw",
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"quality": 95}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_supported_formats_round_trip(fmt, kw):
    img = load_image(encode(red_left_blue_right(), fmt, **kw), name=f"x.{fmt.lower()}")
    assert img.mode == "RGB" and img.size == (40, 20)
    assert close_to(img.getpixel((2, 10)), RED, 30)
    assert close_to(img.getpixel((37, 10)), BLUE, 30)


def test_unsupported_format_is_refused():
    data = encode(red_left_blue_right(), "PPM")
    with pytest.raises(ImageLoadError, match="unsupported format PPM"):
        load_image(data, name="x.ppm")


def test_image_extensions():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    assert is_image_path("A/B.JPG") and not is_image_path("notes.txt")


# --- modes -----------------------------------------------------------------------------------


def test_rgba_transparent_pixels_become_white():
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[:, :5] = (255, 0, 0, 255)  # opaque red
    arr[:, 5:] = (0, 0, 0, 0)  # fully transparent black
    img = load_image(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert img.getpixel((1, 1)) == RED
    assert img.getpixel((8, 8)) == WHITE


def test_keep_alpha_returns_rgba_only_for_transparent_images():
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[:, :5] = (255, 0, 0, 255)
    kept = load_image(encode(Image.fromarray(arr, "RGBA"), "PNG"), keep_alpha=True)
    assert kept.mode == "RGBA" and kept.getpixel((8, 8)) == (0, 0, 0, 0)  # not composited
    pal = Image.new("P", (6, 6), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    assert load_image(encode(pal, "GIF", transparency=0), keep_alpha=True).getpixel((0, 0)) == (0, 0, 0, 0)
    assert load_image(encode(red_left_blue_right(), "PNG"), keep_alpha=True).mode == "RGB"


def test_half_transparent_pixels_blend_with_white():
    img = load_image(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), "PNG"))
    assert close_to(img.getpixel((0, 0)), (127, 127, 127), 2)


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (6, 6), (0, 0))  # black, transparent
    assert load_image(encode(la, "PNG")).getpixel((0, 0)) == WHITE

    pal = Image.new("P", (6, 6), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.putpixel((0, 0), 1)
    gif = encode(pal, "GIF", transparency=0)
    img = load_image(gif)
    assert img.getpixel((0, 0)) == RED
    assert img.getpixel((3, 3)) == WHITE  # index 0 is transparent -> white, not black


def test_rgb_png_with_transparency_key():
    im = Image.new("RGB", (4, 4), (10, 20, 30))
    im.putpixel((0, 0), (200, 100, 50))
    img = load_image(encode(im, "PNG", transparency=(10, 20, 30)))
    assert img.getpixel((2, 2)) == WHITE
    assert img.getpixel((0, 0)) == (200, 100, 50)


def test_palette_without_transparency_keeps_colours():
    img = load_image(encode(red_left_blue_right().convert("P"), "PNG"))
    assert img.getpixel((0, 0)) == RED and img.getpixel((39, 0)) == BLUE


def test_greyscale_and_bilevel():
    assert load_image(encode(Image.new("L", (5, 5), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(encode(Image.new("1", (5, 5), 1), "PNG")).getpixel((0, 0)) == WHITE


def test_16bit_greyscale_is_scaled_not_clipped():
    arr = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    img = load_image(encode(Image.fromarray(arr), "PNG"))
    assert [img.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]


def test_float_image_is_scaled():
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [to_rgb(f).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk(fmt):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    img = load_image(encode(cmyk, fmt))
    assert img.mode == "RGB"
    assert close_to(img.getpixel((4, 4)), RED, 20)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    assert close_to(load_image(buf.getvalue()).getpixel((4, 4)), RED, 5)


def test_animated_webp_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in (BLUE, RED)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    assert close_to(load_image(buf.getvalue()).getpixel((4, 4)), BLUE, 5)


def test_pil_input_rgba_is_composited():
    img = load_image(Image.new("RGBA", (3, 3), (0, 0, 0, 0)))
    assert img.mode == "RGB" and img.getpixel((1, 1)) == WHITE


# --- EXIF orientation ------------------------------------------------------------------------


def with_orientation(img: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif.tobytes())


@pytest.mark.parametrize(
    "orientation, size, red_at, blue_at",
    [
        (1, (40, 20), (2, 10), (37, 10)),  # as stored
        (3, (40, 20), (37, 10), (2, 10)),  # rotated 180: red moves right
        (6, (20, 40), (10, 2), (10, 37)),  # rotate 90 CW: left (red) goes to the top
        (8, (20, 40), (10, 37), (10, 2)),  # rotate 90 CCW: left goes to the bottom
        (2, (40, 20), (37, 10), (2, 10)),  # mirrored
    ],
)
def test_exif_orientation_is_applied(orientation, size, red_at, blue_at):
    img = load_image(with_orientation(red_left_blue_right(), orientation))
    assert img.size == size
    assert img.getpixel(red_at) == RED
    assert img.getpixel(blue_at) == BLUE


def test_exif_orientation_in_jpeg():
    img = load_image(with_orientation(red_left_blue_right(64, 32), 6, "JPEG"))
    assert img.size == (32, 64)
    assert close_to(img.getpixel((16, 4)), RED, 40)


# --- broken data -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(ImageLoadError) as err:
        load_image(data[: len(data) // 2], name="half.img")
    assert err.value.item == "half.img"
    assert "truncated" in err.value.reason or "cannot decode" in err.value.reason


def test_empty_and_garbage(tmp_path):
    with pytest.raises(ImageLoadError, match="empty") as err:
        load_image(b"")
    assert err.value.item == "<bytes>"
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty") as err:
        load_image(empty)
    assert err.value.item == str(empty)
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(b"this is plain text, not an image at all", name="notes.txt")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(io.BytesIO(b""))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="not found") as err:
        load_image(tmp_path / "nope.png")
    assert err.value.item.endswith("nope.png")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_pixel_limit_checked_from_header_before_decoding():
    data = encode(red_left_blue_right(100, 100), "PNG")
    with pytest.raises(ImageLoadError, match="exceeds max_pixels=5000"):
        load_image(data, max_pixels=5000)
    # A truncated body would fail to decode; the size check fires first, proving it reads
    # only the header.
    with pytest.raises(ImageLoadError, match="exceeds max_pixels"):
        load_image(data[:200], max_pixels=5000)
    assert load_image(data, max_pixels=10_000).size == (100, 100)
    assert DEFAULT_MAX_PIXELS >= 40_000_000


def test_pil_decompression_bomb_warning_and_error_become_ours(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warn_size = encode(Image.new("RGB", (40, 40)), "PNG")  # 1600 px > 1000: PIL warns
    error_size = encode(Image.new("RGB", (50, 50)), "PNG")  # 2500 px > 2 * 1000: PIL raises
    for data in (warn_size, error_size):
        with pytest.raises(ImageLoadError, match="decompression bomb"):
            load_image(data, name="bomb.png", max_pixels=10**9)


def test_pil_image_input_checks_pixel_limit():
    with pytest.raises(ImageLoadError, match="exceeds max_pixels"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=100)


def test_draft_size_decodes_jpeg_smaller():
    big = encode(red_left_blue_right(800, 600), "JPEG", quality=90)
    full = load_image(big)
    small = load_image(big, draft_size=100)
    assert full.size == (800, 600)
    assert 100 <= min(small.size) < 600
    assert close_to(small.getpixel((5, small.size[1] // 2)), RED, 30)


# --- helpers ---------------------------------------------------------------------------------


def test_read_bytes_limits(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    assert read_bytes(path, max_bytes=100) == b"x" * 100
    with pytest.raises(ImageLoadError, match="larger than the limit of 99 bytes"):
        read_bytes(path, max_bytes=99)
    assert read_bytes(io.BytesIO(b"abc"), max_bytes=3) == b"abc"
    with pytest.raises(ImageLoadError, match="larger"):
        read_bytes(io.BytesIO(b"abcd"), max_bytes=3)
    with pytest.raises(ImageLoadError, match="not found"):
        read_bytes(tmp_path / "missing")


def test_sha256_helpers(tmp_path):
    data = b"counterfeit" * 200_000  # > 1 MiB: several chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_bytes(data) == expected
    assert file_sha256(path) == expected


def test_rotated_result_is_not_rotated_twice():
    from PIL import ImageOps

    img = load_image(with_orientation(red_left_blue_right(), 6))
    assert ImageOps.exif_transpose(img).size == img.size == (20, 40)
