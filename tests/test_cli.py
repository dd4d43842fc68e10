"""The ``hpinfer`` command line as a user runs it: a real subprocess, real models, real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import cv2
import pytest
from PIL import Image

from hpinfer.models import BUILT_IN
from hpinfer.pipelines import bundled_pipelines, resolve_pipeline
from hpinfer.runtime.engines.onnxruntime import OnnxRuntimeEngine

SINGLE_LINE_TEXT = "在中国作家协会第三届儿童文学"
HEADER = re.compile(r"^(?P<where>\S.*): (?P<count>\d+) text line\(s\)$", re.MULTILINE)


def run_cli(*args: str, cwd: Path = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HPINFER_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "hpinfer.cli", *map(str, args)],
        capture_output=True, text=True, encoding="utf-8", timeout=120, cwd=cwd, env=env,
    )


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """``hpinfer.cli.main`` in this process, its exit code and output as ``run_cli`` returns them."""
    from hpinfer.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["hpinfer", *args], code, out, err)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def headers(stdout: str) -> List[tuple]:
    return [(m["where"], int(m["count"])) for m in HEADER.finditer(stdout)]


def assert_user_error(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit != 0, exactly one 'error:' line on stderr, nothing else but log lines, no traceback."""
    assert proc.returncode != 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    stray = [line for line in lines if not line.startswith(("error:", "INFO", "WARNING"))]
    assert len(errors) == 1 and not stray, proc.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def image_width(path: Path) -> int:
    with Image.open(path) as image:
        return image.width


# --- OCR on one image, with saved results ---------------------------------------------------------


@pytest.fixture(scope="module")
def paragraph_run(tmp_path_factory, shared_images):
    out = tmp_path_factory.mktemp("paragraph") / "out"
    proc = run_cli("predict", "--pipeline", "OCR", "--input", shared_images / "paragraph_en.jpg", "--save_path", out)
    return ok(proc), out


def test_ocr_prints_the_recognised_lines(paragraph_run, shared_images):
    proc, _ = paragraph_run
    found = headers(proc.stdout)
    assert len(found) == 1
    where, count = found[0]
    assert where == str(shared_images / "paragraph_en.jpg")
    assert count >= 3
    text_lines = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert len(text_lines) == count
    assert "MovieShots" in proc.stdout and "Dataset" in proc.stdout
    assert re.search(r"^  0\.\d{3}  \S", proc.stdout, re.MULTILINE)  # score then text
    assert "engine onnxruntime on cpu (use_hpip is off: standard inference)" in proc.stderr


def test_save_path_writes_json_and_side_by_side_image(paragraph_run, shared_images):
    proc, out = paragraph_run
    assert sorted(p.name for p in out.iterdir()) == ["paragraph_en_ocr_res_img.png", "paragraph_en_res.json"]
    res = json.loads((out / "paragraph_en_res.json").read_text(encoding="utf-8"))["res"]
    assert any("MovieShots" in text for text in res["rec_texts"])
    assert len(res["rec_texts"]) == len(res["rec_scores"]) == len(res["rec_polys"]) == headers(proc.stdout)[0][1]
    assert res["input_path"] == str(shared_images / "paragraph_en.jpg")
    with Image.open(out / "paragraph_en_ocr_res_img.png") as drawn:
        drawn.load()
        with Image.open(shared_images / "paragraph_en.jpg") as original:
            assert drawn.size == (2 * original.width, original.height)
    assert "saved 1 result(s) to" in proc.stderr


def test_directory_input_processes_every_image(tmp_path, shared_images):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("single_line.jpg", "tiny.png"):
        shutil.copy(shared_images / name, folder / name)
    (folder / "notes.txt").write_text("not an image")  # unsupported files in a folder are skipped
    proc = ok(run_cli("predict", "--pipeline", "OCR", "--input", folder))
    assert headers(proc.stdout) == [(str(folder / "single_line.jpg"), 1), (str(folder / "tiny.png"), 0)]
    assert SINGLE_LINE_TEXT in proc.stdout


# --- PDFs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_page_pdf(tmp_path_factory, shared_images) -> Path:
    pages = [Image.open(shared_images / name).convert("RGB") for name in ("single_line.jpg", "paragraph_en.jpg", "tiny.png")]
    path = tmp_path_factory.mktemp("pdf") / "doc.pdf"
    pages[0].save(path, "PDF", save_all=True, append_images=pages[1:])
    return path


def test_pdf_gives_one_result_per_page(three_page_pdf):
    proc = ok(run_cli("predict", "--pipeline", "OCR", "--input", three_page_pdf))
    found = headers(proc.stdout)
    assert [where for where, _ in found] == [f"{three_page_pdf} [page {n}]" for n in (1, 2, 3)]
    assert found[0][1] == 1 and found[1][1] >= 3 and found[2][1] == 0
    page_1, page_2 = proc.stdout.split("[page 2]")[0], proc.stdout.split("[page 2]")[1].split("[page 3]")[0]
    assert SINGLE_LINE_TEXT in page_1
    assert "Dataset" in page_2 and "shots" in page_2


def test_pdf_page_range(three_page_pdf, tmp_path):
    out = tmp_path / "out"
    proc = ok(run_cli("predict", "--pipeline", "OCR", "--input", three_page_pdf, "--page_range", "2-3", "--save_path", out))
    found = headers(proc.stdout)
    assert [where for where, _ in found] == [f"{three_page_pdf} [page 2]", f"{three_page_pdf} [page 3]"]
    assert SINGLE_LINE_TEXT not in proc.stdout
    assert "Dataset" in proc.stdout  # really page 2, not page 1 relabelled
    # Saved names carry the 0-based page index, as PaddleX names them.
    assert sorted(p.name for p in out.glob("*.json")) == ["doc_1_res.json", "doc_2_res.json"]
    assert json.loads((out / "doc_1_res.json").read_text(encoding="utf-8"))["res"]["page_index"] == 1


# --- engines ------------------------------------------------------------------------------------------


def test_use_hpip_logs_the_openvino_choice(shared_images):
    proc = ok(run_cli("predict", "--pipeline", "OCR", "--input", shared_images / "single_line.jpg", "--use_hpip"))
    assert SINGLE_LINE_TEXT in proc.stdout
    modules = resolve_pipeline("OCR").modules  # the bundled default's models, each with its engine logged
    for model in (modules[key].model_name for key in ("TextDetection", "TextLineOrientation", "TextRecognition")):
        assert re.search(rf"^INFO hpinfer\.runtime: {re.escape(model)}: engine openvino on cpu \(rule cpu-default: ",
                         proc.stderr, re.MULTILINE), proc.stderr


def test_hpi_config_backend_override(shared_images):
    proc = ok(run_cli("predict", "--pipeline", "OCR", "--input", shared_images / "single_line.jpg",
                      "--use_hpip", "--hpi_config", '{"backend": "onnxruntime"}'))
    assert SINGLE_LINE_TEXT in proc.stdout
    assert proc.stderr.count("engine onnxruntime on cpu (user override 'onnxruntime' passed safe-mode checks)") == 3
    assert "engine openvino" not in proc.stderr


def test_single_model_prints_json(shared_images):
    proc = ok(run_cli("predict", "--model", "PP-OCRv4_mobile_det", "--input", shared_images / "single_line.jpg"))
    first, _, rest = proc.stdout.partition("\n")
    assert first == f"{shared_images / 'single_line.jpg'}:"
    res = json.loads(rest)["res"]
    assert res["model_name"] == "PP-OCRv4_mobile_det"
    assert len(res["dt_polys"]) >= 1
    assert all(len(poly) == 4 and all(len(point) == 2 for point in poly) for poly in res["dt_polys"])
    assert len(res["dt_scores"]) == len(res["dt_polys"])


def test_extra_pipeline_options_reach_the_pipeline(shared_images, tmp_path):
    out = tmp_path / "out"
    proc = ok(run_cli("predict", "--pipeline", "OCR", "--input", shared_images / "single_line.jpg", "--save_path", out,
                      "--use_textline_orientation", "False", "--text_det_box_thresh", "0.6"))
    assert SINGLE_LINE_TEXT in proc.stdout
    res = json.loads((out / "single_line_res.json").read_text(encoding="utf-8"))["res"]
    assert res["model_settings"] == {"use_doc_orientation_classify": False, "use_textline_orientation": False}
    assert res["text_det_params"]["box_thresh"] == 0.6
    assert res["textline_orientation_angles"] == [-1] * len(res["dt_polys"])
    assert "ch_ppocr_mobile_v2.0_cls" not in proc.stderr  # switched off: not even loaded


@pytest.mark.parametrize("name", ["tiny.png", "empty_black.jpg"])
def test_images_without_text(shared_images, name):
    proc = ok(run_cli("predict", "--pipeline", "OCR", "--input", shared_images / name))
    assert headers(proc.stdout) == [(str(shared_images / name), 0)]
    assert proc.stdout.strip().endswith("0 text line(s)")


# --- listings -----------------------------------------------------------------------------------------


def test_models_lists_every_built_in_model():
    proc = ok(run_cli("models"))
    lines = proc.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(BUILT_IN)
    for line in lines:
        name, task = line.split()[:2]
        assert task == BUILT_IN[name].task
        assert BUILT_IN[name].pip in line
    assert any(line.startswith("PP-OCRv4_mobile_det") and line.endswith("installed") for line in lines)


def test_pipelines_lists_the_bundled_pipelines():
    proc = ok(run_cli("pipelines"))
    assert proc.stdout.split() == list(bundled_pipelines())
    assert "OCR" in proc.stdout.split()


def test_listing_rejects_extra_arguments():
    assert_user_error(run_cli("models", "--foo", "1"), "unexpected arguments: --foo 1")


# --- bad inputs: one clear line, a non-zero exit, no traceback ----------------------------------------


def _bad_case(case: str, tmp: Path, images: Path) -> tuple:
    """(arguments, texts the error line must contain) for one kind of user mistake."""
    tiny = images / "tiny.png"
    if case == "missing_file":
        return ["--pipeline", "OCR", "--input", tmp / "nope.jpg"], [f"{tmp / 'nope.jpg'}: does not exist"]
    if case == "corrupt_image":
        data = (images / "paragraph_en.jpg").read_bytes()
        (tmp / "cut.jpg").write_bytes(data[: len(data) // 3])
        return ["--pipeline", "OCR", "--input", tmp / "cut.jpg"], ["cut.jpg: corrupt or truncated image"]
    if case == "empty_file":
        (tmp / "empty.jpg").write_bytes(b"")
        return ["--pipeline", "OCR", "--input", tmp / "empty.jpg"], ["empty.jpg: file is empty"]
    if case == "unsupported_type":
        (tmp / "notes.txt").write_text("hello")
        return ["--pipeline", "OCR", "--input", tmp / "notes.txt"], ["notes.txt: unsupported file type '.txt'"]
    if case == "bad_json":
        return ["--pipeline", "OCR", "--input", tiny, "--hpi_config", '{"backend": openvino}'], ["--hpi_config is not valid JSON"]
    if case == "unknown_hpi_key":
        return ["--pipeline", "OCR", "--input", tiny, "--hpi_config", '{"backend": "openvino", "threads": 2}'], \
            ["threads: unknown key"]
    if case == "unknown_model":
        return ["--model", "PP-OCRv9_det", "--input", tiny], ["unknown model 'PP-OCRv9_det'", "PP-OCRv4_mobile_det"]
    if case == "unknown_pipeline":
        return ["--pipeline", "NoSuchPipeline", "--input", tiny], ["unknown pipeline 'NoSuchPipeline'", "OCR"]
    if case == "unknown_option":
        return ["--pipeline", "OCR", "--input", tiny, "--text_det_thres", "0.3"], ["text_det_thres: unknown parameter", "text_det_thresh"]
    if case == "invalid_yaml":
        (tmp / "broken.yaml").write_text("pipeline_name: OCR\nSubModules: [TextDetection:\n")
        return ["--pipeline", tmp / "broken.yaml", "--input", tiny], ["broken.yaml is not valid YAML"]
    if case == "bad_page_range":
        return ["--pipeline", "OCR", "--input", tiny, "--page_range", "3-1"], ["page_range"]
    if case == "gpu_without_cuda":
        return ["--pipeline", "OCR", "--input", tiny, "--device", "gpu:0"], ["no CUDA provider"]
    if case == "gpu_without_cuda_hpip":
        return ["--pipeline", "OCR", "--input", tiny, "--device", "gpu:0", "--use_hpip"], ["no engine can run on gpu:0"]
    raise AssertionError(case)


HAS_CUDA = "CUDAExecutionProvider" in OnnxRuntimeEngine._providers()
GPU_CASES = {"gpu_without_cuda", "gpu_without_cuda_hpip"}


@pytest.mark.parametrize(
    "case",
    [
        "missing_file", "corrupt_image", "empty_file", "unsupported_type", "bad_json", "unknown_hpi_key",
        "unknown_model", "unknown_pipeline", "unknown_option", "invalid_yaml", "bad_page_range",
        *(pytest.param(c, marks=pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")) for c in sorted(GPU_CASES)),
    ],
)
def test_user_mistakes_give_one_error_line(case, tmp_path, shared_images, capsys):
    """In-process (``cli.main``, what the ``hpinfer`` script runs) for speed; ``missing_file`` also as a real
    subprocess, so the exit code and stderr a user sees are checked end to end."""
    args, expected = _bad_case(case, tmp_path, shared_images)
    proc = run_cli("predict", *args) if case == "missing_file" else run_main(capsys, "predict", *args)
    assert_user_error(proc, *expected)
    assert proc.returncode == 2  # the documented exit code for errors a user can fix
    assert "text line(s)" not in proc.stdout


# --- a bad page or file does not stop the run ---------------------------------------------------------

from test_layout_parsing import on_white, write_pdf  # noqa: E402  (PDF pages PDFium can't load)

FAILED = re.compile(r"^failed: (?P<where>.+?): (?P<why>.+)$", re.MULTILINE)


def failures(stderr: str) -> List[tuple]:
    return [(m["where"], m["why"]) for m in FAILED.finditer(stderr)]


def partial(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Finished with some inputs failed: the documented exit code 3, no traceback, no 'error:' line."""
    assert proc.returncode == 3, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    assert "failed (see the 'failed:' lines above); the rest completed" in proc.stderr
    return proc


@pytest.fixture(scope="module")
def pages(shared_images):
    """BGR pages: paragraph_en.jpg and single_line.jpg on white paper."""
    return [on_white(cv2.imread(str(shared_images / name)), top=380) for name in ("paragraph_en.jpg", "single_line.jpg")]


def test_layout_parsing_reports_a_corrupt_page_and_saves_the_document_as_markdown(pages, tmp_path):
    pdf = write_pdf(tmp_path / "report.pdf", [pages[0]] * 3, corrupt=(1,))
    out = tmp_path / "out"
    proc = partial(run_cli("predict", "--pipeline", "layout_parsing", "--input", pdf, "--save_path", out))
    assert failures(proc.stderr) == [(f"{pdf} [page 2]", failures(proc.stderr)[0][1])]
    assert "cannot load page 2" in failures(proc.stderr)[0][1]
    assert "1 input(s) or page(s) failed" in proc.stderr
    printed = re.findall(r"^(\S.*): ?$", proc.stdout, re.MULTILINE)
    assert printed == [f"{pdf} [page {n}]" for n in (1, 2, 3)]  # every page has its result, the bad one too
    assert "MovieShots" in proc.stdout.split("[page 2]")[0] and "MovieShots" in proc.stdout.split("[page 3]")[1]
    bad = json.loads((out / "report_1_res.json").read_text(encoding="utf-8"))["res"]
    assert bad["status"] == "error" and "cannot load page 2" in bad["error"] and bad["blocks"] == []
    assert sorted(p.name for p in out.glob("*.json")) == [f"report_{i}_res.json" for i in range(3)]
    assert len(list(out.glob("*_layout_parsing_res_img.png"))) == 3
    markdown = (out / "report_res.md").read_text(encoding="utf-8")  # one document for the whole PDF
    first, second, third = markdown.split("\n\n---\n\n")
    assert re.match(r"## 3 ?MovieShots", first) and "Dataset" in first
    assert second.startswith("<!-- ") and "page 2: not processed" in second
    assert re.match(r"## 3 ?MovieShots", third) and third.rstrip("\n") == first
    assert "3/3" in proc.stderr  # the progress bar counted every page


def test_ocr_goes_on_after_a_corrupt_pdf_page_within_the_page_range(pages, tmp_path):
    pdf = write_pdf(tmp_path / "scan.pdf", [pages[1], pages[0], pages[1], pages[0]], corrupt=(2,))
    proc = partial(run_cli("predict", "--pipeline", "OCR", "--input", pdf, "--page_range", "2-4"))
    assert [where for where, _ in headers(proc.stdout)] == [f"{pdf} [page 2]", f"{pdf} [page 4]"]
    ((where, why),) = failures(proc.stderr)
    assert where == f"{pdf} [page 3]" and why.startswith("cannot load page 3")


def test_a_directory_with_unreadable_files_reports_them_and_does_the_rest(shared_images, pages, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    shutil.copy(shared_images / "single_line.jpg", folder / "a.jpg")
    data = (shared_images / "paragraph_en.jpg").read_bytes()
    (folder / "b.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (folder / "c.pdf").write_bytes(b"%PDF-1.4 not really")  # cannot even be opened
    write_pdf(folder / "d.pdf", [pages[1], pages[1]], corrupt=(0,))
    shutil.copy(shared_images / "single_line.jpg", folder / "e.jpg")
    proc = partial(run_cli("predict", "--pipeline", "OCR", "--input", folder))
    assert [where for where, _ in headers(proc.stdout)] == [str(folder / "a.jpg"), f"{folder / 'd.pdf'} [page 2]", str(folder / "e.jpg")]
    found = failures(proc.stderr)
    assert [where for where, _ in found] == [str(folder / "b.jpg"), str(folder / "c.pdf"), f"{folder / 'd.pdf'} [page 1]"]
    assert "corrupt or truncated image" in found[0][1] and "corrupt, empty or unreadable PDF" in found[1][1]
    assert "cannot load page 1" in found[2][1]
    assert "3 input(s) or page(s) failed" in proc.stderr


def test_a_model_takes_a_page_range(three_page_pdf):
    proc = ok(run_cli("predict", "--model", "PP-OCRv4_mobile_det", "--input", three_page_pdf, "--page_range", "2"))
    assert re.findall(r"^(\S.*):$", proc.stdout, re.MULTILINE) == [f"{three_page_pdf} [page 2]"]
    assert json.loads(proc.stdout.partition("\n")[2])["res"]["page_index"] == 1
