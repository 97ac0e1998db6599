import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from saemi.errors import SaemiError
from saemi.io import check_content, load_image


def encode(array, fmt="PNG", **kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width, height):
    """A PNG whose header claims width x height pixels, with one tiny data chunk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_grey_png_becomes_rgb_at_original_size():
    a = (np.arange(40 * 70) % 256).astype(np.uint8).reshape(40, 70)
    out = load_image(encode(a))
    assert out.shape == (40, 70, 3) and out.dtype == np.uint8
    assert (out[..., 0] == a).all() and (out[..., 2] == a).all()


def test_rgba_drops_alpha():
    a = np.zeros((50, 60, 4), np.uint8)
    a[..., 0], a[..., 3] = 200, 10
    out = load_image(encode(a))
    assert out.shape == (50, 60, 3) and (out[..., 0] == 200).all() and (out[..., 1] == 0).all()


def test_palette_png():
    img = Image.fromarray((np.arange(64 * 64) % 7).astype(np.uint8).reshape(64, 64), mode="L").convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert load_image(buf.getvalue()).shape == (64, 64, 3)


def test_16bit_tiff_scaled_by_its_own_range_not_truncated():
    import tifffile

    a = np.linspace(1000, 4000, 48 * 64).astype(np.uint16).reshape(48, 64)
    buf = io.BytesIO()
    tifffile.imwrite(buf, a)
    out = load_image(buf.getvalue())
    assert out.shape == (48, 64, 3)
    assert out.min() == 0 and out.max() == 255  # stretched, not divided by 256 (which would give ~4..15)


def test_multipage_tiff_reads_first_page():
    import tifffile

    pages = np.stack([np.full((40, 40), v, np.uint8) for v in (10, 200)])
    pages[0, :20] = 90
    buf = io.BytesIO()
    tifffile.imwrite(buf, pages)
    out = load_image(buf.getvalue())
    assert out.shape == (40, 40, 3) and set(np.unique(out)) == {10, 90}


def test_jpeg_and_bmp():
    a = np.random.default_rng(0).integers(0, 255, (64, 80, 3)).astype(np.uint8)
    assert load_image(encode(a, "JPEG")).shape == (64, 80, 3)
    assert (load_image(encode(a, "BMP")) == a).all()


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"this is a text file, not a micrograph\n" * 20, "not an image"),
    (png_header_only(1, 1), "1x1 pixels"),
    (png_header_only(30000, 30000), "megapixels"),
])
def test_bad_inputs_name_the_problem(data, words):
    with pytest.raises(SaemiError) as err:
        load_image(data)
    assert words in str(err.value)


def test_truncated_png():
    data = encode(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(SaemiError) as err:
        load_image(data[: len(data) // 2])
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)


def test_pixel_limit_is_configurable(monkeypatch):
    data = encode(np.zeros((100, 100), np.uint8))
    with pytest.raises(SaemiError, match="limit"):
        load_image(data, max_pixels=5000)
    monkeypatch.setenv("SAEMI_MAX_PIXELS", "5000")
    with pytest.raises(SaemiError, match="limit"):
        load_image(data)


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(SaemiError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(SaemiError, match="cannot read an image"):
        load_image(12345)


def test_all_black_image_is_rejected_by_content_check():
    img = load_image(encode(np.zeros((64, 64), np.uint8)))
    with pytest.raises(SaemiError, match="uniformly black"):
        check_content(img)
    check_content(img + np.eye(64, dtype=np.uint8)[..., None])  # any structure passes
