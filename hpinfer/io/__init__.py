"""Reading inputs (files, directories, URLs, PDFs, bytes, arrays) into BGR images."""

from .inputs import InputItem, iter_inputs, count_inputs
from .images import decode_image, to_bgr

__all__ = ["InputItem", "iter_inputs", "count_inputs", "decode_image", "to_bgr"]
