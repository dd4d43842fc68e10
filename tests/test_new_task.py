"""Adding a model kind is one file in hpinfer/tasks: a planted task module is found by the registry and a
user's model of that kind runs through create_model, with no edit to the runtime, the models layer or the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import hpinfer
from hpinfer.models import resolve_model

TASKS_DIR = Path(hpinfer.__file__).parent / "tasks"

PROBE = textwrap.dedent('''
    import cv2
    import numpy as np

    from hpinfer.tasks.base import Params, Task


    class ProbeParams(Params):
        size: tuple = (48, 192)


    class Probe(Task):
        name = "probe_kind"
        params_type = ProbeParams
        module_name = "Probe"

        def predict_image(self, session, image, p, state):
            x = cv2.resize(image, p.size[::-1]).astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
            return {"scores": session.run_one(x)[0][0].tolist()}


    TASK = Probe()
''')


def test_a_task_module_is_all_a_new_model_kind_needs(tmp_path, shared_images):
    planted = TASKS_DIR / "_probe_kind_test.py"
    planted.write_text(PROBE, encoding="utf-8")
    model_dir = tmp_path / "probe"
    model_dir.mkdir()
    shutil.copy(resolve_model("ch_ppocr_mobile_v2.0_cls").model_file, model_dir / "model.onnx")
    (model_dir / "hpinfer.yaml").write_text("task: probe_kind\n", encoding="utf-8")
    script = (
        "import json, sys, hpinfer\n"
        "with hpinfer.create_model(model_dir=sys.argv[1]) as m:\n"
        "    print(json.dumps({'task': m.task, 'scores': m.predict(sys.argv[2])[0]['scores']}))\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", script, str(model_dir), str(shared_images / "single_line.jpg")],
                              capture_output=True, text=True, timeout=120)
    finally:
        planted.unlink()
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["task"] == "probe_kind" and len(got["scores"]) == 2 and abs(sum(got["scores"]) - 1) < 1e-3
