"""PaddleX 3.7.2's own OCR pipeline, in PaddleX's venv, serving one image at a time to ``compare_peers.py``.

    PADDLEX_PYTHON benchmarks/paddlex_worker.py --dirs DIR --images a.npy b.npy ... --mode best|default --cls on|off --threads N

It builds PaddleX's bundled ``OCR`` pipeline config, unchanged but for: the document preprocessor off (UVDoc
unwarping and page orientation are not part of the comparison), the model names and ``model_dir`` of the
PaddleX directories ``benchmarks/paddlex_dirs.py`` wrote (the PP-OCRv4 weights ours runs as ONNX), and the
line classifier on or off. ``--mode default`` leaves PaddleX's engine choice alone (CPU: oneDNN + new IR);
``best`` is its best working CPU configuration here (``paddle_static``, ``run_mode`` mkldnn, legacy IR).

Protocol: after loading it prints one JSON line (``{"ready": ..., "settings": ...}`` or ``{"error": ...}``); then
for each line ``INDEX`` on stdin it runs image INDEX (decoded BGR pixels from the .npy files, the same ones ours
gets) and prints ``{"texts": [...], "boxes": [...], "scores": [...], "seconds": s, "angles": [...]}`` (angles: the
line classifier's verdict per detected line, -1 with it off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")  # offline: never look for model hosters


def build(args):
    import numpy as np
    from paddlex import create_pipeline
    from paddlex.inference.pipelines import load_pipeline_config

    config = load_pipeline_config("OCR")
    config["use_doc_preprocessor"] = False
    config["use_textline_orientation"] = args.cls == "on"
    names = {"TextDetection": "PP-OCRv4_mobile_det", "TextRecognition": "PP-OCRv4_mobile_rec",
             "TextLineOrientation": "PP-LCNet_x0_25_textline_ori"}
    for key, name in names.items():
        config["SubModules"][key]["model_name"] = name
        config["SubModules"][key]["model_dir"] = os.path.join(args.dirs, name)
    kwargs = {"device": "cpu"}
    if args.mode == "best":
        kwargs.update(engine="paddle_static", engine_config={"run_mode": "mkldnn", "cpu_threads": args.threads, "enable_new_ir": False})
    else:  # PaddleX's defaults, threads equalised
        kwargs.update(engine="paddle_static", engine_config={"cpu_threads": args.threads})
    pipeline = create_pipeline(config=config, **kwargs)
    images = [np.load(path) for path in args.images]
    return pipeline, images


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dirs", required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--mode", choices=["best", "default"], default="best")
    parser.add_argument("--cls", choices=["on", "off"], default="on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    out = sys.stdout
    sys.stdout = sys.stderr  # PaddleX prints; only this protocol goes to the real stdout
    try:
        pipeline, images = build(args)
        first = list(pipeline.predict(images[0]))[0]  # PaddleX builds predictors lazily: fail here, not mid-run
        del first
    except Exception as err:  # noqa: BLE001 - reported to the parent, which records it
        out.write(json.dumps({"error": f"{type(err).__name__}: {str(err).splitlines()[0][:400]}"}) + "\n")
        out.flush()
        return 1
    import paddle
    import paddlex

    out.write(json.dumps({"ready": True, "settings": f"paddlex {paddlex.__version__} paddle {paddle.__version__} {args.mode} threads={args.threads}"}) + "\n")
    out.flush()
    for line in sys.stdin:
        index = int(line)
        start = time.perf_counter()
        result = list(pipeline.predict(images[index]))[0]
        seconds = time.perf_counter() - start
        boxes = [[[int(x), int(y)] for x, y in poly] for poly in result["rec_polys"]]
        out.write(json.dumps({"texts": list(result["rec_texts"]), "boxes": boxes,
                              "scores": [float(s) for s in result["rec_scores"]], "seconds": seconds,
                              "angles": [int(a) for a in result.get("textline_orientation_angles", [])]}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
