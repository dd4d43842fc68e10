"""hpinfer tune: real, short tunes of the OCR pipeline on two small shared images."""

from __future__ import annotations

import shutil

import pytest
import yaml

import hpinfer
from hpinfer.cli import main
from hpinfer.runtime.hardware import cpu_has_fast_bf16
from hpinfer.tune import Candidate, Trial, finalists, rebatch, tune

pytest.importorskip("openvino")

NAMES = ("paragraph_en.jpg", "single_line.jpg")
MODULES = {"TextDetection", "TextLineOrientation", "TextRecognition"}


@pytest.fixture(scope="module")
def samples(shared_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    for name in NAMES:
        shutil.copy(shared_images / name, folder / name)
    return folder


def test_tune_writes_a_pipeline_that_loads_with_the_measured_winners(samples, tmp_path):
    out = tmp_path / "tuned.yaml"
    report = tune("OCR", samples, out, engines=["openvino"], precisions=["fp32"], threads=[2, 1], batches=[6, 32],
                  repeats=1, progress=False)
    assert report.images == 2 and set(report.chosen) == MODULES
    measured = {(t.module, t.candidate) for t in report.trials if t.ok and t.ms is not None}
    assert all((key, cand) in measured for key, cand in report.chosen.items())
    assert sum(t.chosen for t in report.trials) == len(MODULES)
    assert "<- chosen" in report.table()

    data = yaml.safe_load(out.read_text())
    rec = data["SubModules"]["TextRecognition"]
    assert rec["hpi_config"] == report.chosen["TextRecognition"].hpi_config()
    assert rec["max_batch_size"] == report.chosen["TextRecognition"].batch
    with hpinfer.create_pipeline(str(out)) as tuned, hpinfer.create_pipeline("OCR") as plain:
        for key, cand in report.chosen.items():
            settings = tuned.sub_modules[key].session.settings
            assert settings.startswith("openvino") and f"threads={cand.threads} " in settings
        assert tuned.text_rec.params.max_batch_size == report.chosen["TextRecognition"].batch
        image = str(samples / NAMES[0])
        assert tuned.predict(image)[0]["rec_texts"] == plain.predict(image)[0]["rec_texts"]

    # verify step: the written YAML timed end to end against use_hpip defaults, numbers in the report and header
    assert report.verify_error is None
    for speed in (report.tuned_speed, report.default_speed):
        assert speed.images == 2 and len(speed.passes_ms) == 1
        assert speed.images_per_s > 0 and speed.ms_per_image > 0
    assert report.speedup > 0
    line = report.speed_line()
    assert "tuned pipeline:" in line and "use_hpip defaults:" in line and f"hpinfer bench --pipeline {out}" in line
    header = "".join(l for l in out.read_text().splitlines(keepends=True) if l.startswith("#"))
    assert f"{report.tuned_speed.images_per_s:.2f} images/s" in header
    assert f"{report.default_speed.images_per_s:.2f} images/s" in header
    assert f"hpinfer bench --pipeline {out}" in header


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="no bf16 on this CPU")
def test_an_impossible_tolerance_rejects_reduced_precision(samples):
    report = tune("OCR", samples, None, tolerance=0.0, engines=["openvino"], precisions=["fp32", "bf16"], threads=[2],
                  batches=[32], repeats=1, progress=False)
    bf16 = [t for t in report.trials if t.candidate.precision == "bf16"]
    assert bf16 and all(t.verdict.startswith("rejected") for t in bf16 if t.drift)
    # detection boxes always move a little in bf16: fp32 must win there
    assert any(t.drift for t in bf16 if t.module == "TextDetection")
    assert report.chosen["TextDetection"].precision == "fp32"
    assert all(t.ok for t in report.trials if t.candidate.precision == "fp32")


def test_cli_tune_with_no_budget_skips_every_candidate(samples, tmp_path, capsys):
    out = tmp_path / "t.yaml"
    assert main(["tune", "--pipeline", "OCR", "--input", str(samples), "--output", str(out), "--engines", "openvino",
                 "--precisions", "fp32", "--threads", "1", "--budget_s", "0", "--repeats", "1", "--log_level", "WARNING"]) == 0
    printed = capsys.readouterr().out
    assert "skipped (budget)" in printed and "<- chosen" not in printed
    assert "tuned pipeline:" in printed and f"hpinfer bench --pipeline {out}" in printed
    data = yaml.safe_load(out.read_text())
    assert data["use_hpip"] is True and "hpi_config" not in data["SubModules"]["TextDetection"]
    assert main(["tune", "--pipeline", "OCR", "--input", str(samples), "--engines", "nope"]) == 2


def test_tune_int8_calibrates_measures_drift_and_writes_what_it_chose(samples, tmp_path):
    """int8 (``hpinfer tune --int8``) quantizes each model with the default calibration set (bundled examples and
    generated pages) and is judged on the inputs held back from its calibration; the YAML then loads the int8
    engines it chose and fp32 where int8 drifted too far."""
    out = tmp_path / "t.yaml"
    report = tune("OCR", samples, out, engines=["openvino"], precisions=["fp32", "int8"], threads=[2], batches=[32],
                  repeats=1, progress=False, verify_output=False, calibration_samples=10)  # 10: cheap, still judged
    int8 = {t.module: t for t in report.trials if t.candidate.precision == "int8"}
    assert set(int8) == MODULES
    for trial in int8.values():
        assert trial.drift is not None and 0 <= trial.drift <= 1
        assert trial.verdict.startswith(("ok", "rejected (drift")), trial.verdict  # judged, not failed
    with hpinfer.create_pipeline(str(out)) as tuned:
        for key, cand in report.chosen.items():
            assert f"precision={cand.precision}" in tuned.sub_modules[key].session.settings
            assert cand.precision == "fp32" or int8[key].ok


def test_rebatch_splits_and_remembers_the_origin():
    import numpy as np

    calls = [{"x": np.zeros((5, 1))}, {"x": np.zeros((2, 1))}]
    split, origin = rebatch(calls, 2)
    assert [len(c["x"]) for c in split] == [2, 2, 1, 2] and origin == [0, 0, 0, 1]
    assert rebatch(calls, None)[1] == [0, 1]
    assert Candidate("openvino", "fp32", 2).hpi_config()["backend_config"] == {"cpu_num_threads": 2, "precision": "fp32"}


def test_only_close_accepted_candidates_are_timed_again():
    def trial(module, ms, verdict="ok", threads=1):
        return Trial(module, Candidate("openvino", "fp32", threads), ms=ms, verdict=verdict)

    trials = [
        trial("det", 100.0), trial("det", 105.0, threads=2), trial("det", 150.0, threads=3),
        trial("det", 90.0, "rejected (drift)", threads=4),  # faster but rejected: not a finalist, not the bar
        trial("rec", 50.0),  # alone: nothing to confirm
    ]
    close = finalists(trials)
    assert list(close) == ["det"] and [t.ms for t in close["det"]] == [100.0, 105.0]
