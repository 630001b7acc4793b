"""Every kind of bad camera file gets a clear error naming file and cause."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectd.errors import ImageError
from inspectd.inspection.images import load_image
from tests.conftest import SHARED_DATASETS, noise_image

LIMITS = dict(max_pixels=4_000_000, max_bytes=10_000_000)


def test_good_png_and_jpeg_load_as_rgb(tmp_path):
    noise_image(64, 48).save(tmp_path / "a.png")
    noise_image(64, 48).convert("L").save(tmp_path / "b.jpg")
    for name in ("a.png", "b.jpg"):
        image = load_image(tmp_path / name, **LIMITS)
        assert image.mode == "RGB" and image.size == (64, 48)


def test_sixteen_bit_greyscale_uses_its_full_range(tmp_path):
    values = np.linspace(1000, 4000, 32 * 32, dtype=np.uint16).reshape(32, 32)
    Image.fromarray(values).save(tmp_path / "mono16.png")
    image = np.asarray(load_image(tmp_path / "mono16.png", **LIMITS))
    assert image.min() == 0 and image.max() == 255


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.png", b"", "file is empty"),
        ("text.png", b"this is not an image", "not an image PIL can decode"),
    ],
)
def test_unusable_bytes(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(tmp_path / name, **LIMITS)
    assert info.value.path.endswith(name)


def test_truncated_file_is_reported_not_half_read(tmp_path):
    noise_image(200, 200).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.png", **LIMITS)
    noise_image(200, 200).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg", **LIMITS)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "absent.png", **LIMITS)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path, **LIMITS)


def test_pixel_limit_refuses_decompression_bombs_before_decoding(tmp_path):
    Image.new("L", (3000, 2000)).save(tmp_path / "big.png")  # tiny file, 6M pixels
    assert (tmp_path / "big.png").stat().st_size < 100_000
    with pytest.raises(ImageError, match=r"3000x2000 = 6000000 pixels, over the limit of 4000000"):
        load_image(tmp_path / "big.png", **LIMITS)


def test_byte_limit(tmp_path):
    noise_image(300, 300).save(tmp_path / "noisy.png")
    with pytest.raises(ImageError, match="over the limit of 1000 "):
        load_image(tmp_path / "noisy.png", max_pixels=10**7, max_bytes=1000)


def test_reads_real_magnetic_tile_images():
    folder = SHARED_DATASETS / "magnetic_tile" / "test"
    if not folder.is_dir():
        pytest.skip(f"shared dataset not present at {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".bmp"})[:10]
    assert files
    for path in files:
        image = load_image(path, **LIMITS)
        assert image.mode == "RGB" and min(image.size) > 16, Path(path).name
