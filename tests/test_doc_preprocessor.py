"""doc_preprocessor: rotated copies of real pages come back upright, pixel for pixel, with the angle they were
turned by; the switch per call and at creation; the picture; a classifier that doesn't name angles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import hpinfer
from hpinfer.errors import ConfigError
from hpinfer.pipelines.doc_preprocessor import upright

IMAGES = ["doc_page_zh_en.jpg", "paragraph_en.jpg", "vertical_text.png"]
# np.rot90(page, k) turns it k x 90° counter-clockwise, i.e. (4 - k) x 90° clockwise: the label.
TURNED_CLOCKWISE = {0: 0, 1: 270, 2: 180, 3: 90}


@pytest.fixture(scope="module")
def pipeline():
    with hpinfer.create_pipeline("doc_preprocessor") as pipe:
        yield pipe


@pytest.mark.parametrize("name", IMAGES)
def test_rotated_copies_come_back_upright(pipeline, shared_images, name) -> None:
    page = cv2.imread(str(shared_images / name))
    for k, angle in TURNED_CLOCKWISE.items():
        (res,) = pipeline.predict(np.ascontiguousarray(np.rot90(page, k)))
        assert res["angle"] == angle and res["angle_score"] > 0.8, (name, k)
        np.testing.assert_array_equal(res.image, page)
        assert res["model_settings"] == {"use_doc_orientation_classify": True}


def test_upright_undoes_a_clockwise_turn() -> None:
    page = np.arange(6, dtype=np.uint8).reshape(2, 3)
    clockwise_90 = np.array([[3, 0], [4, 1], [5, 2]], dtype=np.uint8)  # the first row now runs down the right side
    np.testing.assert_array_equal(upright(clockwise_90, 90), page)
    np.testing.assert_array_equal(upright(np.rot90(clockwise_90, 2), 270), page)
    assert upright(page, 0) is page
    colour = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    for angle in (90, 180, 270, 450):
        turned = upright(colour, angle)
        np.testing.assert_array_equal(turned, np.rot90(colour, angle // 90))
        assert turned.flags["C_CONTIGUOUS"]


def test_switch_per_call_and_at_creation(pipeline, shared_images, tmp_path) -> None:
    turned = np.ascontiguousarray(np.rot90(cv2.imread(str(shared_images / "paragraph_en.jpg")), 2))
    (res,) = pipeline.predict(turned, use_doc_orientation_classify=False)
    assert res["angle"] == -1 and res.image is turned
    assert pipeline.predict(turned)[0]["angle"] == 180  # the per-call value does not stick
    saved = pipeline.predict(turned)[0].save_to_img(tmp_path)
    assert saved.name == "input_doc_preprocessor_res_img.png" and cv2.imread(str(saved)).shape == turned.shape
    with hpinfer.create_pipeline("doc_preprocessor", use_doc_orientation_classify=False) as off:
        assert off.predictors == []
        with pytest.raises(ConfigError, match="created with it on"):
            off.predict(turned, use_doc_orientation_classify=True)


def test_classifier_must_name_angles(tmp_path) -> None:
    config = tmp_path / "pre.yaml"
    config.write_text(
        "pipeline_name: doc_preprocessor\nSubModules:\n  DocOrientationClassify:\n"
        "    model_name: PP-LCNet_x1_0_doc_ori\n    labels: [up, right, down, left]\n"
    )
    with pytest.raises(ConfigError, match="name its classes with angles"):
        hpinfer.create_pipeline(config)
    config.write_text("pipeline_name: doc_preprocessor\nSubModules:\n  Orientation:\n    model_name: PP-LCNet_x1_0_doc_ori\n")
    with pytest.raises(ConfigError, match="SubModules.DocOrientationClassify is missing"):
        hpinfer.create_pipeline(config)
