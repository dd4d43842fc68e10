"""Result objects: a JSON-able dict per input (PaddleX's ``{"res": {...}}`` shape) that can save itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
from PIL import Image


def to_jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class Result(dict):
    """One input's (or one PDF page's) prediction.

    The dict holds the fields; ``image`` keeps the input pixels so that ``save_to_img`` can draw on
    them, and ``visualize`` is the task's drawing function (so results need no class per task).
    """

    def __init__(
        self,
        data: Dict[str, Any],
        image: Optional[np.ndarray],
        visualize: Callable[["Result"], np.ndarray],
        suffix: str,
    ):
        super().__init__(data)
        self.image = image
        self._visualize = visualize
        self._suffix = suffix  # file-name tag, e.g. "ocr_res_img" as PaddleX names its pictures

    @property
    def json(self) -> Dict[str, Any]:
        return {"res": to_jsonable(dict(self))}

    @property
    def img(self) -> np.ndarray:
        """The visualisation as a BGR array."""
        return self._visualize(self)

    def _default_name(self, tag: str, ext: str) -> str:
        source = self.get("input_path")
        stem = Path(str(source)).stem if source else "input"
        page = self.get("page_index")
        if page is not None:
            stem += f"_{page}"
        return f"{stem}_{tag}{ext}"

    def _target(self, path: "str | Path", tag: str, ext: str) -> Path:
        path = Path(path)
        if path.suffix.lower() != ext and (path.is_dir() or not path.suffix):
            path = path / self._default_name(tag, ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save_to_json(self, path: "str | Path") -> Path:
        target = self._target(path, "res", ".json")
        target.write_text(json.dumps(self.json, ensure_ascii=False, indent=2), encoding="utf-8")
        return target

    def save_to_img(self, path: "str | Path") -> Path:
        target = self._target(path, self._suffix, ".png")
        if target.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
            target = target.with_suffix(".png")
        Image.fromarray(np.ascontiguousarray(self.img[:, :, ::-1])).save(target)
        return target

    def print(self) -> None:
        print(json.dumps(self.json, ensure_ascii=False, indent=2))
