"""One page-outcome contract for every ``predict_iter``: a file or page that cannot be read raises by default
(``on_error="raise"``) or, asked for, comes out as a ``FailedPage`` result while the rest still runs."""

from __future__ import annotations

import shutil

import pytest

import hpinfer
from hpinfer.errors import ConfigError, InputError
from hpinfer.io.pages import FailedPage


@pytest.fixture(scope="module")
def folder(shared_images, tmp_path_factory):
    """a.jpg (fine), b.jpg (truncated), c.jpg (fine): read in that order."""
    path = tmp_path_factory.mktemp("pages")
    data = (shared_images / "single_line.jpg").read_bytes()
    shutil.copy(shared_images / "single_line.jpg", path / "a.jpg")
    (path / "b.jpg").write_bytes(data[: len(data) // 3])
    shutil.copy(shared_images / "single_line.jpg", path / "c.jpg")
    return path


def outcomes(results):
    return [("failed" if isinstance(r, FailedPage) else "ok", r["input_path"].rsplit("/", 1)[-1]) for r in results]


def test_a_model_raises_at_a_bad_file_unless_asked_for_error_results(folder):
    with hpinfer.create_model("PP-OCRv4_mobile_det") as det:
        with pytest.raises(InputError, match=r"b\.jpg: corrupt or truncated image"):
            list(det.predict_iter(str(folder)))
        results = list(det.predict_iter(str(folder), on_error="result"))
        with pytest.raises(ConfigError, match="on_error must be one of raise, result"):
            list(det.predict_iter(str(folder), on_error="skip"))
    assert outcomes(results) == [("ok", "a.jpg"), ("failed", "b.jpg"), ("ok", "c.jpg")]
    assert "corrupt or truncated image" in results[1]["error"] and results[1]["page_index"] is None
    assert len(results[0]["dt_polys"]) == len(results[2]["dt_polys"]) >= 1


@pytest.mark.parametrize("use_queues", [False, True], ids=["sequential", "stage-threads"])
def test_ocr_keeps_the_contract_with_and_without_stage_threads(folder, use_queues):
    with hpinfer.create_pipeline("OCR", use_queues=use_queues) as ocr:
        with pytest.raises(InputError, match=r"b\.jpg"):
            list(ocr.predict_iter(str(folder)))
        results = list(ocr.predict_iter(str(folder), on_error="result"))
    assert outcomes(results) == [("ok", "a.jpg"), ("failed", "b.jpg"), ("ok", "c.jpg")]
    assert results[0]["rec_texts"] == results[2]["rec_texts"] != []
