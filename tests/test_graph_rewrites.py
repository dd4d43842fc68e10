"""The OpenVINO engine's graph rewrites compute what the original graph computes (run by ONNX Runtime, the
reference engine), apply where they should and nowhere else, and leave the OCR results as they were."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hpinfer.io.inputs import iter_inputs
from hpinfer.models import create_model, resolve_model
from hpinfer.tasks.text_detection import DetParams, preprocess
from hpinfer.runtime import graph_rewrites

RNG = np.random.default_rng(0)


def _const(name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _head(kernel: int = 2, stride: int = 2, bias_shape=(1, 4, 1, 1)) -> onnx.ModelProto:
    """A DB-style head: squeeze-and-excitation with a residual, then ConvTranspose + bias + BN + Relu,
    ConvTranspose + Sigmoid."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "se_w"], ["se"], kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["se"], ["gate"]),
        helper.make_node("Mul", ["x", "gate"], ["scaled"]),
        helper.make_node("Add", ["x", "scaled"], ["features"]),
        helper.make_node("ConvTranspose", ["features", "up1_w"], ["up1"], kernel_shape=[kernel, kernel], strides=[stride, stride]),
        helper.make_node("Add", ["up1", "up1_b"], ["up1_biased"]),
        helper.make_node("BatchNormalization", ["up1_biased", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["act"]),
        helper.make_node("ConvTranspose", ["act", "up2_w", "up2_b"], ["up2"], kernel_shape=[kernel, kernel], strides=[stride, stride]),
        helper.make_node("Sigmoid", ["up2"], ["prob"]),
    ]
    inits = [
        _const("se_w", (8, 8, 1, 1)), _const("up1_w", (8, 4, kernel, kernel)), _const("up1_b", bias_shape),
        _const("bn_g", (4,)), _const("bn_b", (4,)), _const("bn_m", (4,)),
        numpy_helper.from_array(RNG.uniform(0.5, 2, 4).astype(np.float32), "bn_v"),
        _const("up2_w", (4, 1, kernel, kernel)), _const("up2_b", (1,)),
    ]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, None, None])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, None, None])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_rewritten_head_computes_the_same_map():
    model = _head()
    x = RNG.standard_normal((1, 8, 13, 21)).astype(np.float32)
    expected = _run(model, x)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert graph_rewrites.rewrite(rewritten) == {"deconv_as_depth_to_space": 2, "residual_scale": 1}
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "ConvTranspose" not in ops and "BatchNormalization" not in ops and ops.count("DepthToSpace") == 2
    got = _run(rewritten, x)
    assert got.shape == expected.shape == (1, 1, 52, 84)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_overlapping_kernels_and_width_broadcast_constants_are_left_alone():
    overlapping = _head(kernel=3, stride=2)
    assert graph_rewrites.rewrite(overlapping)["deconv_as_depth_to_space"] == 0
    assert [n.op_type for n in overlapping.graph.node].count("ConvTranspose") == 2
    # A (4,) constant broadcasts over the last axis (width), not channels: the deconvolution is rewritten
    # without absorbing it, and the result still matches.
    model = _head(bias_shape=(4,))
    x = RNG.standard_normal((1, 8, 5, 2)).astype(np.float32)  # width 2 -> 4: the (4,) Add broadcasts over it
    expected = _run(model, x)
    graph_rewrites.rewrite(model)
    assert "BatchNormalization" in [n.op_type for n in model.graph.node]
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["PP-OCRv4_mobile_det", "PP-OCRv6_small_det"])
def test_real_detectors_rewritten_give_the_same_probability_map(name, shared_images):
    spec = resolve_model(name)
    model = onnx.load(str(spec.model_file))
    image = next(iter_inputs(str(shared_images / "paragraph_en.jpg"))).image
    x = preprocess(image, DetParams(**{k: v for k, v in spec.params.items() if k in DetParams.model_fields}))
    expected = _run(model, x)
    applied = graph_rewrites.rewrite(model)
    assert applied["deconv_as_depth_to_space"] == 2
    np.testing.assert_allclose(_run(model, x), expected, atol=2e-5)


def test_openvino_detector_boxes_are_unchanged_by_the_rewrites(shared_images):
    """OpenVINO (rewritten) against ONNX Runtime (the original graph): the same boxes on real pages."""
    images = [item.image for item in iter_inputs(str(shared_images))][:6]
    rewritten = create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config={"backend": "openvino"})
    original = create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config={"backend": "onnxruntime"})
    for image in images:
        a, b = rewritten.predict(image)[0], original.predict(image)[0]
        np.testing.assert_array_equal(a["dt_polys"], b["dt_polys"])
        np.testing.assert_allclose(a["dt_scores"], b["dt_scores"], atol=1e-4)
