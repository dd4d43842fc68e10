"""PaddleX 3.7.2's own pipeline YAMLs (copied unchanged into tests/data/paddlex_3.7.2) and the ``paddlex`` OCR
profile against PaddleX's recorded outputs on the shared images (benchmarks/paddlex_fidelity.py wrote them, with
PaddleX running in its own venv)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import hpinfer
from hpinfer.errors import ConfigError
from hpinfer.io.inputs import iter_inputs

DATA = Path(__file__).parent / "data" / "paddlex_3.7.2"
REPO = Path(__file__).resolve().parents[1]


def test_paddlex_ocr_yaml_names_every_missing_model_and_unsupported_feature():
    with pytest.raises(ConfigError) as err:
        hpinfer.create_pipeline(DATA / "OCR.yaml")
    text = str(err.value)
    for expected in (
        "SubModules.TextDetection: model PP-OCRv6_medium_det is not shipped", "bundled PP-OCRv6_small_det",
        "model PP-OCRv6_medium_rec", "PP-LCNet_x1_0_textline_ori", "give its PaddleX model_dir",
        "SubPipelines.DocPreprocessor.use_doc_unwarping: document unwarping (UVDoc)",
    ):
        assert expected in text
    assert "(4)" in text and "(5)" not in text  # one error, every problem in it


@pytest.mark.parametrize("name, expected", [
    ("layout_parsing", ["use_table_recognition: table recognition", "RT-DETR-H_layout_17cls", "PP-OCRv4_server_rec"]),
    ("PP-StructureV3", ["'PP-StructureV3' is not an hpinfer pipeline", "format_block_content: option not supported"]),
    ("table_recognition", ["module 'table_structure_recognition' is not supported"]),
    ("seal_recognition", ["SubModules.LayoutDetection.layout_nms: option not supported", "module 'seal_text_detection'"]),
    ("doc_preprocessor", ["use_doc_unwarping: document unwarping (UVDoc)"]),
])
def test_other_paddlex_yamls_are_refused_by_name(name, expected):
    with pytest.raises(ConfigError) as err:
        hpinfer.create_pipeline(DATA / f"{name}.yaml")
    for part in expected:
        assert part in str(err.value)


def _edited(tmp_path, name, edit) -> Path:
    data = yaml.safe_load((DATA / f"{name}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_paddlex_ocr_yaml_with_bundled_models_keeps_paddlex_values(tmp_path, shared_images):
    def bundled(data):
        data["SubPipelines"]["DocPreprocessor"]["use_doc_unwarping"] = False
        for key, name in {"TextDetection": "PP-OCRv4_mobile_det", "TextRecognition": "PP-OCRv4_mobile_rec",
                          "TextLineOrientation": "ch_ppocr_mobile_v2.0_cls"}.items():
            data["SubModules"][key]["model_name"] = name

    with hpinfer.create_pipeline(_edited(tmp_path, "OCR", bundled)) as pipeline:
        assert pipeline.options.profile == "paddlex" and pipeline.options.use_doc_orientation_classify
        assert pipeline.options.text_rec_score_thresh == 0.0
        p = pipeline.text_det.params
        assert (p.limit_side_len, p.limit_type, p.max_side_limit, p.box_thresh, p.unclip_ratio) == (64, "min", 4000, 0.6, 1.5)
        result = pipeline.predict(str(shared_images / "single_line.jpg"))[0]
        assert result["rec_texts"] == ["在中国作家协会第三届儿童文学"]
    doc = hpinfer.create_pipeline(_edited(tmp_path, "doc_preprocessor", lambda d: d.update(use_doc_unwarping=False)))
    assert doc.options.use_doc_orientation_classify
    doc.close()
    odd = _edited(tmp_path, "OCR", lambda d: d["SubModules"]["TextDetection"].update(box_type="poly"))
    with pytest.raises(ConfigError, match=r"SubModules.TextDetection.box_type: option not supported by hpinfer"):
        hpinfer.create_pipeline(odd)


def test_paddlex_profile_gives_paddlex_results_on_the_same_weights(tmp_path, shared_images):
    """PaddleX's OCR.yaml on PaddleX model dirs (line classifier off), run on the paddle engine; PaddleX's texts and
    boxes were recorded from PaddleX itself. doc_page_zh_en and wide_line differ in a few characters because
    PaddleX's venv crops lines with OpenCV 4.10 and ours with 5.0 (cubic warps differ by a few grey levels; run on
    PaddleX's OpenCV, benchmarks/paddlex_fidelity.py finds all 10 images equal: benchmarks/RESULTS.md)."""
    pytest.importorskip("paddle", reason="the paddle extra is not installed (pip install 'hpinfer[paddle]')")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from paddlex_dirs import write_dirs

    dirs = write_dirs(tmp_path / "models")

    def paddlex_dirs(data):
        data["use_doc_preprocessor"] = False
        data["use_textline_orientation"] = False
        for key, ours in {"TextDetection": "PP-OCRv4_mobile_det", "TextRecognition": "PP-OCRv4_mobile_rec",
                          "TextLineOrientation": "ch_ppocr_mobile_v2.0_cls"}.items():
            data["SubModules"][key].update(model_name=dirs[ours].name, model_dir=str(dirs[ours]))

    recorded = json.loads((DATA / "ocr_v4_cls_off_outputs.json").read_text(encoding="utf-8"))["images"]
    with hpinfer.create_pipeline(_edited(tmp_path, "OCR", paddlex_dirs), hpi_config={"backend": "paddle"}) as pipeline:
        for name, theirs in recorded.items():
            result = pipeline.predict(next(iter_inputs(str(shared_images / name))).image)[0]
            boxes = np.asarray(result["rec_polys"]).reshape(-1, 4, 2)
            assert len(boxes) == len(theirs["boxes"]), name
            if len(boxes):
                assert np.abs(boxes - np.asarray(theirs["boxes"])).max() <= 2, name
            if name not in ("doc_page_zh_en.jpg", "wide_line.jpg"):
                assert list(result["rec_texts"]) == theirs["texts"], name
