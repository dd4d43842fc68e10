"""Image decoding to 3-channel BGR uint8, whatever the file's mode (EXIF, 1-bit, gray, palette, alpha, 16-bit)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

# A decompression-bomb guard that callers (the server) can tighten.
DEFAULT_MAX_PIXELS = 200_000_000


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes; ``name`` is only used in error messages."""
    if not data:
        raise InputError(f"{name}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides, just below
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise InputError(
                    f"{name}: image is {image.width}x{image.height} pixels, above the limit of {max_pixels}"
                )
            image.load()
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a supported image (jpg, png, bmp, tiff, webp) or PDF") from None
    except Image.DecompressionBombError:  # above twice PIL's MAX_IMAGE_PIXELS: refused before the size is known
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0) or max_pixels)
        raise InputError(f"{name}: image is above the limit of {limit} pixels") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{name}: corrupt or truncated image ({err})") from None
    return pil_to_bgr(ImageOps.exif_transpose(image))


def on_background(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """BGR pixels (H x W x 3) over a background that contrasts with what is drawn:
    black behind bright content (white text on a transparent PNG), white behind dark content, judged by
    the mean luminance of the pixels that are not fully transparent (RapidOCR 3.x chooses the same way;
    always white, as before, left white text unreadable). ``alpha``: H x W, 0..255."""
    weight = alpha.astype(np.float32)[:, :, None] / 255.0
    shown = alpha > 0
    luminance = color[shown].astype(np.float32).mean(axis=0) if shown.any() else np.zeros(3, np.float32)
    background = 0.0 if float(np.dot(luminance, [0.114, 0.587, 0.299])) >= 128 else 255.0  # BT.601, BGR
    blended = color.astype(np.float32) * weight + background * (1.0 - weight)
    return np.ascontiguousarray(blended.round().astype(np.uint8))


def pil_to_bgr(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        return on_background(rgba[:, :, 2::-1], rgba[:, :, 3])
    if image.mode.startswith("I;16") or image.mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        peak = arr.max() or 1.0
        image = Image.fromarray((arr * (255.0 / peak)).astype(np.uint8))
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def to_bgr(array: np.ndarray, name: str = "array") -> np.ndarray:
    """Arrays follow OpenCV's convention: HxW gray, HxWx3 BGR or HxWx4 BGRA."""
    if not isinstance(array, np.ndarray) or array.size == 0:
        raise InputError(f"{name}: expected a non-empty numpy image array")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2))
    if array.ndim == 3 and array.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 4:
        return on_background(array[:, :, :3], array[:, :, 3])
    raise InputError(f"{name}: unsupported array shape {array.shape} (use HxW, HxWx3 BGR or HxWx4 BGRA)")
