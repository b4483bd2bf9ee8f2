"""vecsearch.images: decoding every kind of picture into RGB, and refusing what cannot or should not load."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vecsearch import ImageError
from vecsearch.images import IMAGE_EXTENSIONS, is_image_path, load_image


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"), mode="RGB")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)


# --- modes -----------------------------------------------------------------------------------------


def test_rgb_image_passes_through_unchanged(tmp_path: Path) -> None:
    original = _noise(40, 30, seed=1)
    path = tmp_path / "rgb.png"
    original.save(path)

    loaded = load_image(path)

    assert loaded.mode == "RGB"
    assert loaded.size == (40, 30)
    assert np.array_equal(_pixels(loaded), _pixels(original))


def test_rgba_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[:, :10] = (200, 10, 10, 255)  # left half: opaque red
    rgba[:, 10:] = (0, 0, 255, 0)  # right half: fully transparent blue
    rgba[0, 0] = (0, 0, 0, 128)  # one half-transparent black pixel
    path = tmp_path / "clipart.png"
    Image.fromarray(rgba, mode="RGBA").save(path)

    loaded = load_image(path)
    pixels = _pixels(loaded)

    assert loaded.mode == "RGB"
    assert loaded.size == (20, 10)
    assert (pixels[:, 10:] == 255).all(), "transparent pixels must be white, not their hidden colour"
    assert (pixels[1:, :10] == (200, 10, 10)).all(), "opaque pixels keep their colour"
    # black at alpha 128 over white: 255 * (1 - 128/255) = 127
    assert all(abs(int(v) - 127) <= 1 for v in pixels[0, 0]), pixels[0, 0]


def test_greyscale_with_alpha_becomes_white_where_transparent(tmp_path: Path) -> None:
    la = np.zeros((4, 4, 2), dtype=np.uint8)
    la[:, :, 0] = 30
    la[:, :2, 1] = 255
    la[:, 2:, 1] = 0
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)

    pixels = _pixels(load_image(path))

    assert (pixels[:, :2] == 30).all()
    assert (pixels[:, 2:] == 255).all()


def test_palette_with_transparency_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (8, 4), 0)
    image.putpalette([0, 200, 0] + [10, 10, 10] + [0, 0, 0] * 254)  # 0 = green, 1 = near-black
    image.paste(1, (4, 0, 8, 4))  # right half uses palette index 1
    path = tmp_path / "palette.png"
    image.save(path, transparency=1)
    assert Image.open(path).info.get("transparency") == 1  # the file really carries a transparent index

    loaded = load_image(path)
    pixels = _pixels(loaded)

    assert loaded.mode == "RGB"
    assert (pixels[:, :4] == (0, 200, 0)).all()
    assert (pixels[:, 4:] == 255).all()


def test_palette_without_transparency_keeps_colours(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    path = tmp_path / "palette.gif"
    image.save(path)

    pixels = _pixels(load_image(path))

    assert (pixels == (10, 20, 30)).all()


def test_16_bit_greyscale_is_scaled_by_its_own_range(tmp_path: Path) -> None:
    values = np.linspace(1000, 3000, 50 * 20).reshape(20, 50).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"

    loaded = load_image(io.BytesIO(_png_bytes(image)))
    pixels = _pixels(loaded)

    assert loaded.mode == "RGB"
    assert loaded.size == (50, 20)
    assert pixels.min() == 0
    assert pixels.max() == 255
    assert (pixels == 255).mean() < 0.01, "PIL's plain convert() would clip every value >= 255 to white"
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    # brightness follows the values: first row darker than the last
    assert pixels[0].mean() < pixels[-1].mean()


def test_16_bit_greyscale_from_path_and_from_memory_agree(tmp_path: Path) -> None:
    values = np.arange(0, 64 * 64, dtype=np.uint16).reshape(64, 64) * 7
    image = Image.fromarray(values)
    path = tmp_path / "depth.png"
    image.save(path)

    from_path = _pixels(load_image(path))
    image_bytes = path.read_bytes()
    from_memory = _pixels(load_image(image_bytes))

    assert len(image_bytes) > 0
    assert np.array_equal(from_path, from_memory)
    assert from_path.min() == 0 and from_path.max() == 255


def test_flat_16_bit_image_does_not_divide_by_zero(tmp_path: Path) -> None:
    image = Image.fromarray(np.full((5, 5), 4000, dtype=np.uint16))

    pixels = _pixels(load_image(_png_bytes(image)))

    assert (pixels == 0).all()


def test_cmyk_is_converted_to_rgb(tmp_path: Path) -> None:
    image = Image.new("CMYK", (6, 2), (0, 0, 0, 0))  # white
    image.paste((0, 255, 255, 0), (0, 0, 3, 2))  # left half: red
    path = tmp_path / "print.tif"
    image.save(path)

    loaded = load_image(path)
    pixels = _pixels(loaded)

    assert loaded.mode == "RGB"
    assert (pixels[:, :3] == (255, 0, 0)).all()
    assert (pixels[:, 3:] == (255, 255, 255)).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 30), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 10, 30))  # a blue strip on the left edge of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    assert Image.open(path).size == (60, 30)

    loaded = load_image(path)
    pixels = _pixels(loaded)

    assert loaded.size == (30, 60), "portrait after applying EXIF orientation 6"
    # rotated 90 degrees clockwise: the stored left edge is now the top edge
    top, bottom = pixels[:5].mean(axis=(0, 1)), pixels[-5:].mean(axis=(0, 1))
    assert top[2] > 150 and top[0] < 80, top
    assert bottom[0] > 150 and bottom[2] < 80, bottom


def test_animated_gif_loads_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3

    loaded = load_image(path)
    pixels = _pixels(loaded)

    assert loaded.mode == "RGB"
    assert loaded.size == (16, 16)
    assert (pixels == (255, 0, 0)).all()


# --- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file_raises_image_error(tmp_path: Path, fmt: str, suffix: str) -> None:
    buffer = io.BytesIO()
    _noise(200, 150, seed=3).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(path)
    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(data[: len(data) // 2])


def test_non_image_bytes_raise_not_readable(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"this is not a jpeg at all, just text")

    with pytest.raises(ImageError, match="^not a readable image$"):
        load_image(path)
    with pytest.raises(ImageError, match="^not a readable image$"):
        load_image(b"\x00\x01\x02 garbage")


def test_empty_file_is_not_a_readable_image(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")

    with pytest.raises(ImageError, match="not a readable image"):
        load_image(path)


def test_missing_file_raises_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="^file not found$"):
        load_image(tmp_path / "nowhere.png")


def test_too_many_megapixels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _noise(64, 48).save(path)

    with pytest.raises(ImageError, match="too large") as caught:
        load_image(path, max_megapixels=0.001)

    assert "64x48" in str(caught.value)
    assert "0.001" in str(caught.value)
    # the same picture is fine under the default limit
    assert load_image(path).size == (64, 48)


def test_image_exactly_at_the_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "edge.png"
    _noise(100, 10).save(path)  # exactly 0.001 MP

    assert load_image(path, max_megapixels=0.001).size == (100, 10)


# --- sources ---------------------------------------------------------------------------------------


def test_loading_from_bytes_and_streams_matches_loading_from_path(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    _noise(33, 21, seed=5).save(path)
    data = path.read_bytes()

    from_path = _pixels(load_image(path))
    from_str = _pixels(load_image(str(path)))
    from_bytes = _pixels(load_image(data))
    from_stream = _pixels(load_image(io.BytesIO(data)))

    assert from_path.shape == (21, 33, 3)
    assert np.array_equal(from_path, from_str)
    assert np.array_equal(from_path, from_bytes)
    assert np.array_equal(from_path, from_stream)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("photo.jpg", True),
        ("photo.JPG", True),
        ("photo.Jpeg", True),
        ("scan.PNG", True),
        ("anim.GiF", True),
        ("pic.webp", True),
        ("pic.WEBP", True),
        ("old.bmp", True),
        ("scan.TIF", True),
        ("scan.tiff", True),
        ("dir/sub/x.png", True),
        ("notes.txt", False),
        ("photo.jpg.txt", False),
        ("archive.png.zip", False),
        ("README", False),
        ("photo", False),
    ],
)
def test_is_image_path_is_case_insensitive(name: str, expected: bool) -> None:
    assert is_image_path(name) is expected
    assert is_image_path(Path(name)) is expected


def test_supported_extensions_are_lowercase_with_dot() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} == IMAGE_EXTENSIONS


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_reduced_jpeg_decoding_keeps_every_side_at_least_the_asked_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    big = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 255, (1200, 1700, 3), dtype=np.uint8)).save(big, quality=85)
    full = load_image(big)
    reduced = load_image(big, min_size=224)
    assert full.size == (1700, 1200)
    assert reduced.size == (425, 300)  # decoded at 1/4: the largest reduction that keeps 224 on each side
    assert load_image(big, min_size=2000).size == (1700, 1200)  # never smaller than asked, never upscaled
    png = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(png)
    assert load_image(png, min_size=100).size == (800, 600)  # only JPEG decoders can scale


def test_reduced_decoding_follows_the_exif_rotation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (1600, 800), "red").save(path, exif=exif)
    assert load_image(path).size == (800, 1600)
    assert load_image(path, min_size=200).size == (200, 400)


# --- pictures above PIL's limit: streamed through libvips ----------------------------------------


def test_streamed_size_keeps_the_shorter_side_and_bounds_the_pixels() -> None:
    from vecsearch.images import STREAMED_MAX_MEGAPIXELS, streamed_size

    assert streamed_size(20990, 29700, 672) == 951  # shorter side 672, aspect kept
    assert streamed_size(1000, 800, 2000) == 1000  # never enlarged
    assert streamed_size(10000, 10000, None) == 4000  # no size asked: at most 16 MP
    longest = streamed_size(200_000, 1000, 672)  # a panorama: the pixel bound wins over the shorter side
    assert longest * longest / 200 <= STREAMED_MAX_MEGAPIXELS * 1e6 * 1.001


def test_streamed_decoding_matches_from_path_bytes_and_stream(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    _noise(300, 200, seed=6).save(path)
    data = path.read_bytes()
    decoded = [
        _pixels(load_image(source, min_size=100, stream_above_megapixels=0))
        for source in (path, str(path), data, io.BytesIO(data))
    ]
    assert decoded[0].shape == (100, 150, 3)  # shrunk while streaming, to the shorter side asked
    assert all(np.array_equal(decoded[0], other) for other in decoded[1:])


def test_default_cap_refuses_decompression_bombs_before_decoding() -> None:
    import struct
    import zlib

    from vecsearch.images import DEFAULT_MAX_MEGAPIXELS

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 40_000, 8, 2, 0, 0, 0)  # 2,000 MP of RGB in ~100 bytes
    bomb = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    assert DEFAULT_MAX_MEGAPIXELS >= 1000
    with pytest.raises(ImageError, match=r"^image too large \(50000x40000, 2000 MP > limit 1000 MP\)$"):
        load_image(bomb)


def test_formats_libvips_cannot_stream_are_refused_above_the_pil_limit() -> None:
    gif = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(gif, format="GIF")
    with pytest.raises(ImageError, match=r"^image too large \(16x16: above 89 MP only PNG, JPEG, WebP and TIFF"):
        load_image(gif.getvalue(), stream_above_megapixels=0)
