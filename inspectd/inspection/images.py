"""Open camera images defensively: every failure names the file and the cause."""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from inspectd.errors import ImageError

SYMLINK_REFUSED = "symbolic link refused (drop folders take regular files only)"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float monochrome cameras: scale the full range to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image.convert("RGB")


def read_image_bytes(path: Path, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """Read a whole file once through one descriptor; type and size are checked on it before reading.

    ``follow_symlinks=False`` (the daemon's drop folders) refuses a symbolic link instead of reading its
    target: whoever can write a drop folder must not make the daemon read any file it can reach.
    """
    path = Path(path)
    name = str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # O_NONBLOCK: a FIFO must not hang us
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(name, "file does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise ImageError(name, SYMLINK_REFUSED) from None
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ImageError(name, "not a regular file")
        if status.st_size > max_bytes:
            raise ImageError(name, f"file is {status.st_size} bytes, over the limit of {max_bytes} "
                                   "(images.max_file_bytes)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


def fitted(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` scaled down (never up) so that its longest side is at most ``longest``, aspect kept."""
    width, height = size
    scale = min(1.0, longest / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(data: bytes, name: str, max_pixels: int, longest: int | None = None) -> Image.Image:
    """Decode fully (so truncation shows now, not inside the model) as RGB; the pixel limit is checked before any
    pixel is decoded and decompression bombs are refused.

    With ``longest`` (the console's pictures) only about the pixels that will be shown are decoded: a JPEG
    through ``draft`` (the decoder's DCT scaling, 1/2 to 1/8, so a 36 MP photo is never held whole), other
    formats decoded then resized, to ``fitted(size, longest)``.
    """
    if not data:
        raise ImageError(name, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(
                        name,
                        f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                        "(images.max_pixels; refused as a possible decompression bomb)",
                    )
                if width < 1 or height < 1:
                    raise ImageError(name, f"image has no pixels ({width}x{height})")
                if longest is None:
                    image.load()
                    return _to_rgb(image)
                target = fitted((width, height), longest)
                if image.format == "JPEG":
                    image.draft("RGB", target)
                image.load()
                if image.mode not in ("L", "RGB", "I;16", "I;16B", "I;16L", "I", "F"):
                    image = image.convert("RGB")  # palette, alpha, CMYK: resized as RGB
                if image.size != target:
                    image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
                return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not an image PIL can decode (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(name, f"image data is corrupt or truncated ({exc})") from None


def load_image(path: Path, max_pixels: int, max_bytes: int) -> Image.Image:
    return decode_image(read_image_bytes(path, max_bytes), str(path), max_pixels)
