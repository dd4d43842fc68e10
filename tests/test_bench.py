"""The benchmark tool: ``hpinfer.bench.benchmark`` and ``hpinfer bench``, with real models on shared images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import hpinfer
from hpinfer.bench import BETWEEN, BenchReport, _module_stages, _with_calls, benchmark
from hpinfer.runtime.engines.base import StageTimer

IMAGES = ["bilevel_test.png", "exif_rotated.jpg"]  # small, each with text (so every sub-module runs)
SUB_MODULES = ["TextDetection", "TextLineOrientation", "TextRecognition"]


@pytest.fixture(scope="module")
def ocr():
    pipe = hpinfer.create_pipeline("OCR")
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def report(ocr, shared_images) -> BenchReport:
    return benchmark(ocr, [shared_images / name for name in IMAGES], warmup=1, iters=2)


def test_report_has_every_stage_of_every_sub_module(report):
    assert list(report.modules) == SUB_MODULES
    for name, module in report.modules.items():
        assert module.backend == "onnxruntime" and "threads=" in module.settings, name
        assert module.calls == len(IMAGES) * 2 and module.engine_runs >= module.calls, name
        for stage in ("pre", "infer", "post"):
            stats = module.stages[stage]
            assert stats.calls == module.calls and stats.mean_ms > 0 and stats.total_s > 0, (name, stage)
            assert stats.median_ms > 0 and stats.p90_ms >= stats.median_ms * 0.5 and 0 < stats.share < 1, (name, stage)
    assert set(report.pipeline) == {"pre", "crop", "post", "other"}


def test_report_totals(report):
    assert report.images_timed == len(IMAGES) * 2 and report.throughput > 0
    assert report.throughput == pytest.approx(report.images_timed / report.time_s)
    lat = report.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report.peak_rss_mb > 50
    # Stages and "other" partition the end-to-end time.
    shares = [s.share for m in report.modules.values() for s in m.stages.values()] + [s.share for s in report.pipeline.values()]
    assert sum(shares) == pytest.approx(1.0, abs=0.02)
    text = report.format()
    assert "TextRecognition" in text and "images/s" in text and "p99" in text
    json.dumps(report.to_dict())


def test_timers_off_after_benchmark_and_results_unchanged(ocr, shared_images, report):
    timers = [ocr.timer] + [p.timer for p in ocr.predictors]
    assert not any(t.enabled for t in timers) and not any(t.spans for t in timers)
    image = str(shared_images / "bilevel_test.png")
    plain = ocr.predict(image)[0]["rec_texts"]
    for t in timers:
        t.enabled = True
    try:
        timed = ocr.predict(image)[0]["rec_texts"]
    finally:
        for t in timers:
            t.enabled = False
            t.drain()
    assert plain == timed == ["TEST"]


def test_batch_size(ocr, shared_images):
    rep = benchmark(ocr, [shared_images / name for name in IMAGES], warmup=0, iters=1, batch_size=2)
    assert rep.images_timed == 2 and rep.latency_ms["p50"] > 0
    if hasattr(ocr, "predict_batch"):  # both images detected in one call, their text lines recognised in one call
        assert rep.batching.startswith("predict_batch")
        assert rep.modules["TextDetection"].calls == 1 and rep.modules["TextRecognition"].calls == 1
    else:
        assert rep.batching.startswith("predict(list)") and rep.modules["TextRecognition"].calls == 2


def test_single_model(shared_images):
    det = hpinfer.create_model("PP-OCRv4_mobile_det")
    rep = benchmark(det, shared_images / "bilevel_test.png", warmup=0, iters=2)
    assert list(rep.modules) == ["TextDetection"] and rep.modules["TextDetection"].calls == 2
    assert rep.modules["TextDetection"].stages["infer"].mean_ms > 0 and set(rep.pipeline) == {"other"}


def test_stage_timer_is_a_no_op_when_off():
    timer = StageTimer()
    with timer.stage("pre"):
        pass
    assert timer.spans == []
    timer.enabled = True
    with timer.stage("pre"):
        pass
    (name, start, end), = timer.drain()
    assert name == "pre" and end >= start and timer.spans == []


def test_stages_from_the_timeline():
    # One call with three engine runs: pre before the first, post after the last, gaps between.
    spans = [("infer", 1.0, 2.0), ("infer", 2.5, 3.0), ("infer", 3.1, 4.0), ("call", 0.5, 4.2)]
    stages, runs = _module_stages([spans])
    assert runs == 3
    assert stages["pre"] == [pytest.approx(0.5)] and stages["post"] == [pytest.approx(0.2)]
    assert stages["infer"] == [pytest.approx(2.4)] and stages[BETWEEN] == [pytest.approx(0.6)]
    # A predictor that marks its own stages is taken at its word.
    marked = [("pre", 0.5, 0.9), ("infer", 1.0, 2.0), ("post", 2.0, 2.1), ("call", 0.5, 2.2)]
    stages, _ = _module_stages([marked])
    assert stages["pre"] == [pytest.approx(0.4)] and stages["post"] == [pytest.approx(0.1)]
    assert stages["other"] == [pytest.approx(0.2)] and BETWEEN not in stages
    # Engine runs nobody marked a call around count as calls of their own.
    stages, runs = _module_stages([_with_calls([("infer", 1.0, 2.0), ("infer", 3.0, 3.5)])])
    assert runs == 2 and stages["infer"] == [pytest.approx(1.0), pytest.approx(0.5)]


def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "HPINFER_DEBUG"}
    return subprocess.run([sys.executable, "-m", "hpinfer.cli", "bench", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_cli_bench_writes_json(shared_images, tmp_path):
    proc = _cli("--pipeline", "OCR", "--input", shared_images / "bilevel_test.png", "--iters", "2",
                "--json", "out.json", "--log_level", "WARNING", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "images/s" in proc.stdout and "TextLineOrientation" in proc.stdout
    data = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert data["iters"] == 2 and data["images_timed"] == 2 and data["throughput"] > 0
    assert set(data["latency_ms"]) >= {"p50", "p90", "p99"} and data["peak_rss_mb"] > 0
    assert list(data["modules"]) == SUB_MODULES
    for module in data["modules"].values():
        assert module["backend"] and module["settings"]
        assert {"pre", "infer", "post"} <= set(module["stages"]) and module["stages"]["infer"]["mean_ms"] > 0


@pytest.mark.parametrize("args", [
    ["--pipeline", "OCR", "--input", "missing.jpg"],
    ["--pipeline", "OCR", "--input", "{images}/bilevel_test.png", "--iters", "0"],
    ["--pipeline", "NO_SUCH_PIPELINE", "--input", "{images}/bilevel_test.png"],
])
def test_cli_bench_bad_input_is_one_line(args, shared_images, tmp_path):
    proc = _cli(*[a.format(images=shared_images) for a in args], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
