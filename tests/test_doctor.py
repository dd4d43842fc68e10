"""``hpinfer doctor`` reports what this machine really has."""

from __future__ import annotations

import json
import os

from hpinfer.cli import main
from hpinfer.runtime.engines import ENGINES


def test_doctor_reports_engines_hardware_and_cache(capsys):
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    engines = {row["engine"]: row for row in data["engines"]}
    assert set(engines) == set(ENGINES)
    for name, engine in ENGINES.items():
        state = engines[name]["usable"]["cpu"]
        assert (state.startswith("not installed: pip install")) == (not engine.is_installed()), name
    assert engines["onnxruntime"]["usable"]["cpu"] == "yes" and engines["onnxruntime"]["version"]
    assert data["cpu"]["usable_cores"] >= 1 and "avx2" in data["cpu"]["features"]
    assert data["cache"]["folder"] == os.environ["HPINFER_CACHE_DIR"]
    assert main(["doctor"]) == 0
    assert "model cache:" in capsys.readouterr().out
