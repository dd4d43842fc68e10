"""The torch engine and hpinfer's ONNX → torch translator: same outputs as ONNX Runtime, on CPU here.

Every shipped model is compared with ONNX Runtime fp32 on real, preprocessed shared images, and the OCR
pipeline on the torch engine must read the same texts as on ONNX Runtime. GPU-only behaviour (CUDA graphs,
batch padding, contexts) is tested where a GPU is visible and skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

torch = pytest.importorskip("torch", reason="the torch engine needs torch (pip install 'hpinfer[torch]')")

import hpinfer  # noqa: E402
from hpinfer.device import Device  # noqa: E402
from hpinfer.io import iter_inputs  # noqa: E402
from hpinfer.tasks import image_classification, layout_detection, table_structure, text_detection  # noqa: E402
from hpinfer.tasks.normalize import norm_factors  # noqa: E402
from hpinfer.models.registry import BUILT_IN, resolve_model  # noqa: E402
from hpinfer.tasks import TASKS  # noqa: E402
from hpinfer.tasks.text_recognition import resize_norm  # noqa: E402
from hpinfer.config import BackendConfig, TorchConfig, parse_hpi_config  # noqa: E402
from hpinfer.errors import ConfigError, EngineUnavailableError  # noqa: E402
from hpinfer.runtime.engines.torch_engine import TorchEngine, TorchOptions, batch_buckets  # noqa: E402
from hpinfer.runtime.onnx_to_torch import OnnxModule, calibration_inputs, convert, load_graph, plan_dtypes  # noqa: E402
from hpinfer.runtime.onnx_to_torch.graph import normalize  # noqa: E402
from hpinfer.runtime.onnx_to_torch.module import fold  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs, streams, pinned memory)")
IMAGES = [
    "bilevel_test.png", "doc_page_zh_en.jpg", "empty_black.jpg", "exif_rotated.jpg", "ja_lines.jpg",
    "paragraph_en.jpg", "single_line.jpg", "tiny.png", "vertical_text.png", "wide_line.jpg",
]


def _image(shared_images, name: str) -> np.ndarray:
    return next(iter(iter_inputs(str(shared_images / name)))).image


def _mean_std(spec):
    params = TASKS[spec.task].params(spec.params, spec.name)
    return params.mean, params.std


def _real_input(spec, shared_images) -> np.ndarray:
    """The model's own preprocessing applied to shared images: a page for page models, lines for line models."""
    page = _image(shared_images, "doc_page_zh_en.jpg")
    if spec.task == "text_detection":  # capped at 640 px: keeps the test fast on two cores
        return text_detection.preprocess(page, text_detection.DetParams(**{**spec.params, "limit_type": "max", "limit_side_len": 640}))
    if spec.task == "image_classification":
        return image_classification.preprocess(page, image_classification.ImageClsParams(**spec.params))
    if spec.task == "layout_detection":
        return layout_detection.preprocess(page, layout_detection.LayoutParams(**spec.params))
    if spec.task == table_structure.TASK.name:
        return table_structure.preprocess(page, table_structure.TableParams(**spec.params))[0]
    lines = [_image(shared_images, n) for n in ("single_line.jpg", "wide_line.jpg", "paragraph_en.jpg")]
    _, height, width = TASKS[spec.task].params(spec.params, spec.name).image_shape  # the model's params, defaults filled in
    if spec.task == "text_recognition":
        width = max(width, *(int(height * line.shape[1] / line.shape[0]) for line in lines))
    return np.stack([resize_norm(line, height, width) for line in lines])


def _ort(path, x: np.ndarray):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _installed(name: str) -> bool:
    try:
        resolve_model(name)
        return True
    except hpinfer.ModelNotFoundError:
        return False


# Models the torch engine refuses, and the ops it names: SLANet decodes in an ONNX Loop (Less, Not, And, Loop).
UNTRANSLATABLE = {"SLANet": "Less"}


@pytest.mark.parametrize("name", [n for n in BUILT_IN if _installed(n)])
def test_translated_model_matches_onnxruntime(name, shared_images):
    spec = resolve_model(name)
    x = _real_input(spec, shared_images)
    if name in UNTRANSLATABLE:  # refused by name, so auto-configuration falls back to the next engine
        with pytest.raises(NotImplementedError, match=UNTRANSLATABLE[name]):
            TorchEngine.load(spec.model_file, BackendConfig(cpu_num_threads=1), Device.parse("cpu"))
        return
    session = TorchEngine.load(spec.model_file, BackendConfig(cpu_num_threads=1), Device.parse("cpu"))
    got = session.run_one(x)
    want = _ort(spec.model_file, x)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-3 * max(1.0, np.abs(w).max()), name


def test_ocr_pipeline_reads_the_same_texts_as_onnxruntime(shared_images):
    """Every shared image, both engines in manual mode, one thread each (OpenMP threads spin badly on a busy
    two-core CI machine); detection capped at 960 px to keep this test fast."""
    options = {"text_det_limit_type": "max", "text_det_limit_side_len": 960}
    texts = {}
    for backend in ("onnxruntime", "torch"):
        pipe = hpinfer.create_pipeline("OCR", use_hpip=True, hpi_config={"auto_config": False, "backend": backend, "backend_config": {"cpu_num_threads": 1}})
        assert {p.session.backend for p in pipe.predictors} == {backend}
        texts[backend] = {name: pipe.predict(_image(shared_images, name), **options)[0]["rec_texts"] for name in IMAGES}
        pipe.close()
    assert texts["torch"] == texts["onnxruntime"]
    assert sum(len(t) for t in texts["torch"].values()) > 20  # the images do hold text


def _tiny_model(opset: int, nodes, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name, array):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(array), name))


def test_ops_whose_onnx_semantics_differ_from_torch_defaults():
    """Old-opset softmax over flattened axes, SAME_UPPER pooling, asymmetric conv pads, shape arithmetic, split."""
    rng = np.random.RandomState(0)
    w = rng.randn(4, 3, 3, 3).astype(np.float32)
    nodes = [
        _const("w", w),
        _const("starts", np.array([0], np.int64)), _const("ends", np.array([1], np.int64)),
        _const("minus1", np.array([-1], np.int64)),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[0, 1, 1, 2], strides=[2, 1]),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_UPPER"),
        helper.make_node("Shape", ["p"], ["s"]),
        helper.make_node("Slice", ["s", "starts", "ends"], ["n"]),
        helper.make_node("Concat", ["n", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"]),
        helper.make_node("Unsqueeze", ["flat"], ["u"], axes=[1]),
        helper.make_node("Softmax", ["p"], ["soft"], axis=1),
        helper.make_node("Split", ["soft"], ["a", "b"], axis=1, split=[1, 3]),
        helper.make_node("Resize", ["c", "roi", "scales"], ["up"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        _const("scales", np.array([1, 1, 2, 2], np.float32)), _const("roi", np.array([], np.float32)),
    ]
    nodes = nodes[-2:] + nodes[:-2]  # constants before their use
    model = _tiny_model(11, nodes, [_f("x", ["n", 3, 9, 10])], [_f("u", None), _f("a", None), _f("b", None), _f("up", None)])
    x = rng.randn(2, 3, 9, 10).astype(np.float32)
    module = convert(model)
    got = module(torch.from_numpy(x))
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w_, rtol=1e-5, atol=1e-5)


def test_graph_normalisation_folds_constants_and_fuses_affine_ops():
    graph = load_graph(resolve_model("PP-OCRv4_mobile_det").model_file)
    ops = {n.op for n in graph.nodes}
    assert not ops & {"Constant", "Identity", "Clip", "Div"}  # hard-swish fused; constants folded into buffers
    assert sum(n.op == "Conv" for n in graph.nodes) == 62


def test_shape_arithmetic_traces_without_graph_breaks():
    """Host-value shapes (Shape → Cast → Slice → Concat → Reshape here) let dynamo trace a model whole, as
    torch.compile(fullgraph=True) and torch.export need."""
    module = convert(resolve_model("ch_ppocr_mobile_v2.0_cls").model_file).eval()
    x = torch.rand(2, 3, 48, 192) * 2 - 1
    compiled = torch.compile(module, fullgraph=True, dynamic=False, backend="eager")
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x)[0], module(x)[0])


def test_mixed_precision_keeps_large_and_sensitive_nodes_in_float32(shared_images):
    """Unfused, plain fp16 wrecks PP-OCRv4 det (a ~2e4 activation feeds a batch norm); the default path (batch
    norm folded, calibrated plan) agrees with fp32, and the seal detector's large activations stay float32."""
    spec = resolve_model("PP-OCRv4_mobile_det")
    page = cv2.resize(_image(shared_images, "doc_page_zh_en.jpg"), (320, 448))
    x = torch.from_numpy(text_detection.normalize_to_nchw(page, *_mean_std(spec)))
    unfused = normalize(spec.model_file, fold)
    with torch.inference_mode():
        reference = convert(spec.model_file)(x)[0]
        plain = OnnxModule(unfused, {i: torch.float16 for i in range(len(unfused.nodes))})(x)[0]
        mixed = convert(spec.model_file, "fp16", calibration_inputs((1, 3, 320, 320)))(x)[0]
    assert float((plain - reference).abs().max()) > 0.5
    assert float(((mixed > 0.3) != (reference > 0.3)).float().mean()) < 1e-3

    seal = load_graph(resolve_model("PP-OCRv4_mobile_seal_det").model_file)
    ranges: dict = {}
    for page_like in calibration_inputs((1, 3, 320, 320)):
        for name, peak in convert(seal).value_ranges(page_like).items():
            ranges[name] = max(ranges.get(name, 0.0), peak)
    wide = [seal.nodes[i].op for i, dtype in plan_dtypes(seal, "fp16", ranges).items() if dtype == torch.float32]
    assert "Conv" in wide and len(wide) < len(seal.nodes) // 10

    rec = load_graph(resolve_model("PP-OCRv4_mobile_rec").model_file)
    kept = {rec.nodes[i].op for i, dtype in plan_dtypes(rec, "bf16").items() if dtype == torch.float32}
    assert kept == {"Softmax", "ReduceMean", "Pow", "Sqrt"}  # attention and layer norms


def test_engine_says_what_it_cannot_do():
    assert "int8" in TorchEngine.unsupported_reason(Device.parse("cpu"), "int8")
    assert "fp16 on CPU" in TorchEngine.unsupported_reason(Device.parse("cpu"), "fp16")
    assert TorchEngine.unsupported_reason(Device.parse("cpu"), "fp32") is None
    if not torch.cuda.is_available():
        assert "CUDA" in TorchEngine.unsupported_reason(Device.parse("gpu:0"), "fp32")


def test_batch_buckets():
    assert batch_buckets(1, 128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert batch_buckets(3, 20) == [3, 6, 12, 20]
    assert batch_buckets(8, 8) == [8]


@needs_cuda
def test_cuda_graphs_and_batch_padding_match_eager():
    spec = resolve_model("PP-OCRv4_mobile_rec")
    config = BackendConfig(dynamic_shapes={"x": [[1, 3, 48, 320], [8, 3, 48, 320], [32, 3, 48, 320]]})
    graphs = TorchEngine.load(spec.model_file, config, Device.parse("gpu:0"))
    eager = TorchEngine.load(spec.model_file, BackendConfig(), Device.parse("gpu:0"), TorchConfig(cuda_graphs=False))
    rng = np.random.RandomState(0)
    for batch in (5, 8, 3, 5):  # padded to 8, exact, padded to 4, replayed
        x = rng.uniform(-1, 1, (batch, 3, 48, 320)).astype(np.float32)
        (got,), (want,) = graphs.run_one(x), eager.run_one(x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
    (ref,) = _ort(spec.model_file, x)
    np.testing.assert_allclose(got, ref, atol=1e-4)


@needs_cuda
def test_concurrent_callers_get_their_own_results():
    """Threads share two sessions while new shapes are being captured (captures must not see others' CUDA work)."""
    from concurrent.futures import ThreadPoolExecutor

    names = ("ch_ppocr_mobile_v2.0_cls", "PP-OCRv4_mobile_rec")
    sessions = [TorchEngine.load(resolve_model(n).model_file, BackendConfig(), Device.parse("gpu:0"), TorchConfig(contexts=2)) for n in names]
    rng = np.random.RandomState(1)
    jobs = [(k % 2, rng.uniform(-1, 1, (1 + k % 5, 3, 48, 192 + 32 * (k % 4))).astype(np.float32)) for k in range(12)]
    want = [sessions[s].run_one(x)[0] for s, x in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda job: sessions[job[0]].run_one(job[1])[0], jobs * 4))
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, want[i % len(jobs)], atol=1e-5)


def test_torch_options_are_typed_and_validated():
    hpi = parse_hpi_config({"backend": "torch", "backend_config": {"torch": {"compile": "reduce-overhead", "contexts": 2}}})
    options = hpi.backend_config.torch
    assert (options.compile, options.contexts, options.cuda_graphs, options.tf32, options.aot) == ("reduce-overhead", 2, True, False, False)
    assert not options.own_cuda_graphs  # torch.compile captures its own graphs in that mode
    assert BackendConfig().torch == TorchConfig()
    for bad, words in (({"compile": "fast"}, "torch.compile"), ({"contexts": 0}, "torch.contexts"),
                       ({"aot": True, "compile": "default"}, "exclude each other"), ({"graphs": True}, "unknown key")):
        with pytest.raises(ConfigError, match=words.split(".")[-1]):
            parse_hpi_config({"backend_config": {"torch": bad}})
    assert TorchOptions is TorchConfig  # the old name still works for load(..., options)


def test_engine_reads_its_options_from_backend_config(shared_images):
    spec = resolve_model("ch_ppocr_mobile_v2.0_cls")
    x = _real_input(spec, shared_images)
    plain = TorchEngine.load(spec.model_file, BackendConfig(cpu_num_threads=1), Device.parse("cpu"))
    nhwc = TorchEngine.load(spec.model_file, BackendConfig(cpu_num_threads=1, torch=TorchConfig(channels_last=True)), Device.parse("cpu"))
    assert "channels-last" in nhwc.settings and "channels-last" not in plain.settings
    np.testing.assert_allclose(nhwc.run_one(x)[0], plain.run_one(x)[0], atol=1e-5)
    assert plain.image_runner(np.ones(3, np.float32), np.zeros(3, np.float32)) is None  # GPU pre-processing only

    class Compiled:  # like torch.compile's module wrapper: callable, but with no truth value
        def __call__(self, *xs):
            return plain.module(*xs)

        def __len__(self):
            raise TypeError("no len()")

    from hpinfer.runtime.engines.torch_engine import TorchSession
    from hpinfer.runtime.onnx_to_torch import load_graph as graph_of

    compiled = TorchSession(plain.module, graph_of(spec.model_file), Device.parse("cpu"), BackendConfig(), "test", Compiled())
    np.testing.assert_array_equal(compiled.run_one(x)[0], plain.run_one(x)[0])


def test_device_normalisation_is_the_host_arithmetic(shared_images):
    """What the GPU path computes from the uint8 image (here run on the CPU) equals the host pre-processing bit
    for bit, so fp32 detection results do not change when normalisation moves to the GPU."""
    spec = resolve_model("PP-OCRv4_mobile_det")
    params = text_detection.DetParams(**spec.params)
    page = cv2.resize(_image(shared_images, "doc_page_zh_en.jpg"), (320, 256))
    session = TorchEngine.load(spec.model_file, BackendConfig(cpu_num_threads=1), Device.parse("cpu"))
    seen = []
    session.fn = lambda x: seen.append(x) or (x,)
    fn = session._normalising(*norm_factors(params.mean, params.std))
    fn(torch.from_numpy(page[None]))
    want = text_detection.normalize_to_nchw(page, params.mean, params.std)
    assert seen[0].is_contiguous() and np.array_equal(seen[0].numpy(), want)


def test_export_keeps_batch_and_width_dynamic():
    """Shape arithmetic stays symbolic under torch.export (sizes are not cast to int), so one AOTInductor package
    serves every batch and line width of the recogniser."""
    from hpinfer.runtime.engines.torch_engine.aot import _export
    from hpinfer.runtime.engines.torch_engine.module import _Entry

    graph = load_graph(resolve_model("PP-OCRv4_mobile_rec").model_file)
    _, info = _export(_Entry(convert(graph).eval(), False), graph, Device.parse("cpu"), [[1, 3, 48, 32], [4, 3, 48, 320], [64, 3, 48, 2048]])
    batch, channels, _, width = info["exported_shape"]
    assert isinstance(batch, str) and isinstance(width, str) and channels == 3


def test_bench_profile_on_cpu(shared_images, capsys):
    from hpinfer.bench import profile_engines
    from hpinfer.cli import main

    line = str(shared_images / "single_line.jpg")
    torch_hpi = '{"auto_config": false, "backend": "torch", "backend_config": {"cpu_num_threads": 1}}'
    assert main(["bench", "--model", "PP-OCRv4_mobile_rec", "--input", line, "--iters", "1", "--use_hpip",
                 "--hpi_config", torch_hpi, "--profile", "5"]) == 0
    printed = capsys.readouterr().out
    assert "== profile: TextRecognition ==" in printed and "Conv" in printed and "CPU time" in printed
    with hpinfer.create_model("PP-OCRv4_mobile_rec", use_hpip=True, hpi_config={"auto_config": False, "backend": "onnxruntime", "backend_config": {"cpu_num_threads": 1}}) as model:
        (text,) = profile_engines(model, line).values()
    assert "no per-op profiler" in text and "torch" in text


@needs_cuda
def test_gpu_preprocessing_gives_the_host_results(shared_images):
    spec = resolve_model("PP-OCRv4_mobile_det")
    page = _image(shared_images, "doc_page_zh_en.jpg")
    results = {}
    for on in (True, False):
        hpi = {"auto_config": False, "backend": "torch", "backend_config": {"torch": {"device_preprocess": on}}}
        with hpinfer.create_model(spec.name, device="gpu:0", use_hpip=True, hpi_config=hpi) as det:
            assert (det.session.image_runner(np.ones(3, np.float32), np.zeros(3, np.float32)) is not None) == on
            results[on] = [det.detect(page)[0] for _ in range(3)]  # eager, eager, captured graph
    for a, b in zip(results[True], results[False]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu:0", marks=needs_cuda)])
def test_aot_package_is_built_once_then_loaded(device, tmp_path, monkeypatch):
    monkeypatch.setenv("HPINFER_CACHE_DIR", str(tmp_path))
    spec = resolve_model("ch_ppocr_mobile_v2.0_cls")
    config = BackendConfig(torch=TorchConfig(aot=True))
    try:
        first = TorchEngine.load(spec.model_file, config, Device.parse(device))
    except EngineUnavailableError as err:
        # torch 2.11 on an H100 (2026-11-26): every package segfaulted when loaded by a fresh process
        assert device != "cpu" and "fails to load and run" in str(err) and "check process" in str(err)
        pytest.xfail(f"this torch build's AOTInductor packages don't load here: {err}")
    second = TorchEngine.load(spec.model_file, config, Device.parse(device))
    assert first.aot["built"] and not second.aot["built"] and first.aot["path"] == second.aot["path"]
    eager = TorchEngine.load(spec.model_file, BackendConfig(), Device.parse(device))
    rng = np.random.RandomState(0)
    for batch in (3, 8, 3):
        x = rng.uniform(-1, 1, (batch, 3, 48, 192)).astype(np.float32)
        np.testing.assert_allclose(second.run_one(x)[0], eager.run_one(x)[0], atol=1e-4)


def test_a_package_that_crashes_its_loader_is_refused_not_fatal(tmp_path):
    from hpinfer.runtime.engines.torch_engine.aot import _check_package_in_child

    broken = tmp_path / "model.pt2"
    broken.write_bytes(b"not a package")
    with pytest.raises(EngineUnavailableError, match="fails to load and run on cpu .*check process.*compile instead"):
        _check_package_in_child(broken, [1, 3, 8, 8], Device.parse("cpu"), {})


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu:0", marks=needs_cuda)])
def test_run_best_is_the_argmax_of_run(device, shared_images):
    """Recognition reads only each step's best class and score; on a GPU they are taken there, in a captured graph
    from the third run on (tag "best", beside the plain run's graphs), and must equal numpy's argmax of the scores."""
    spec = resolve_model("PP-OCRv4_mobile_rec")
    x = _real_input(spec, shared_images)
    session = TorchEngine.load(spec.model_file, BackendConfig(cpu_num_threads=1), Device.parse(device))
    for _ in range(3):
        (scores,) = session.run_one(x)
        best, best_scores = session.run_best(x)
        np.testing.assert_array_equal(best, scores.argmax(axis=-1))
        np.testing.assert_array_equal(best_scores, scores.max(axis=-1))
    assert best.shape == scores.shape[:2] and best_scores.dtype == np.float32
