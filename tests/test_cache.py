"""The model cache on real models and engines: keys that change with every input of the build, stale and
corrupt entries never served, one build for concurrent builders, and where entries live."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hpinfer.config import BackendConfig
from hpinfer.device import Device
from hpinfer.models import bind_task, create_model, resolve_model
from hpinfer.tasks.text_detection import DetParams
from hpinfer.pipelines import resolve_pipeline
from hpinfer.commands import build as build_command, cache as cache_command
from hpinfer.runtime import builder
from hpinfer.runtime.cache import ENV_CACHE_DIR, cache_root, key_of, user_cache_dir
from hpinfer.runtime.engines import ENGINES
from hpinfer.runtime.shapes import model_defaults

CPU = Device("cpu")
DET = "PP-OCRv4_mobile_det"


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def det_model_dir(directory: Path, model: str = DET) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resolve_model(model).model_file, directory / "model.onnx")
    (directory / "hpinfer.yaml").write_text("model_name: my_det\ntask: text_detection\n", encoding="utf-8")
    return directory


def open_det(model_dir: Path, backend: str = "onnxruntime"):
    return create_model(model_dir=str(model_dir), use_hpip=True, hpi_config={"backend": backend})


def test_key_changes_with_every_field_and_only_those(tmp_path, shared_images, monkeypatch):
    model = det_model_dir(tmp_path / "a") / "model.onnx"
    other_model = det_model_dir(tmp_path / "b", "PP-OCRv6_small_det") / "model.onnx"
    task = bind_task("text_detection", DetParams())
    other_images = tmp_path / "other_images"
    other_images.mkdir()
    shutil.copyfile(shared_images / "paragraph_en.jpg", other_images / "p.jpg")

    def key(path=model, backend="openvino", device=CPU, **config):
        return key_of(builder.engine_fields(path, backend, BackendConfig(**config), device, task))

    base = {"precision": "int8", "calibration": {"data": str(shared_images)}}
    variants = {
        "base": key(**base),
        "model file": key(other_model, **base),
        "engine": key(backend="onnxruntime", **base),
        "threads": key(cpu_num_threads=1, **base),
        "precision": key(precision="bf16", calibration=base["calibration"]),
        "dynamic_shapes": key(dynamic_shapes={"x": [[1, 3, 32, 32], [1, 3, 64, 64], [1, 3, 96, 96]]}, **base),
        "calibration method": key(precision="int8", calibration={**base["calibration"], "method": "entropy"}),
        "calibration exclusions": key(precision="int8", calibration={**base["calibration"], "keep_first_last": False}),
        "calibration set": key(precision="int8", calibration={"data": str(other_images)}),
    }
    with monkeypatch.context() as m:
        m.setattr(ENGINES["openvino"], "version", classmethod(lambda cls: "2099.1"))
        variants["engine version"] = key(**base)
    with monkeypatch.context() as m:
        m.setattr(builder, "cpu_flags", lambda: frozenset({"sse2"}))
        variants["cpu flags"] = key(**base)
    with monkeypatch.context() as m:
        m.setattr(builder, "cpu_name", lambda: "Some Other CPU")
        variants["cpu model"] = key(**base)
    variants["device"] = key(device=Device("gpu", 0), **base)
    assert len(set(variants.values())) == len(variants), variants

    # What does not change the artifact does not change the key: the guard's tolerance is policy.
    assert key(accuracy_tolerance=0.5, **base) == variants["base"]
    # fp32 ignores the calibration settings (nothing is calibrated).
    assert key(calibration={"method": "entropy"}) == key()


def test_default_shape_bounds_key_only_engines_that_bake_them(tmp_path):
    """A TensorRT profile or CUDA-graph bucket set built from a model's default bounds must not be reused
    once those defaults change; OpenVINO and ONNX Runtime stay dynamic, so their keys ignore the defaults."""
    model = det_model_dir(tmp_path) / "model.onnx"

    def key(backend, defaults):
        with model_defaults(defaults):
            return key_of(builder.engine_fields(model, backend, BackendConfig(), Device("gpu", 0), None))

    small, large = [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 2048, 2048]], [[1, 3, 32, 32], [1, 3, 960, 960], [1, 3, 4096, 4096]]
    assert ENGINES["torch"].bakes_shape_bounds and ENGINES["tensorrt"].bakes_shape_bounds
    assert key("torch", small) != key("torch", large)
    assert key("onnxruntime", small) == key("onnxruntime", large)


def test_entry_lives_in_a_writable_model_dir_and_is_reused(tmp_path, user_cache):
    model_dir = det_model_dir(tmp_path / "my_det")
    with open_det(model_dir) as first:
        artifact = first.session.artifact
    assert artifact.parent.parent == model_dir / ".cache"
    assert not user_cache.exists()
    with open_det(model_dir) as second:
        assert second.session.artifact == artifact


def test_package_shipped_models_use_the_user_cache(user_cache):
    assert cache_root(resolve_model(DET).model_file) == user_cache_dir() == user_cache
    with create_model(DET, use_hpip=True, hpi_config={"backend": "onnxruntime"}) as model:
        assert model.session.artifact.is_relative_to(user_cache)


def test_a_changed_model_file_is_never_served_a_stale_engine(tmp_path, shared_images):
    model_dir = det_model_dir(tmp_path / "my_det")
    image = str(shared_images / "paragraph_en.jpg")
    with open_det(model_dir) as model:
        old_artifact, old_boxes = model.session.artifact, model.predict(image)[0]["dt_polys"]
    shutil.copyfile(resolve_model("PP-OCRv6_small_det").model_file, model_dir / "model.onnx")  # same path, new model
    with open_det(model_dir) as model:
        assert model.session.artifact != old_artifact
        cached_boxes = model.predict(image)[0]["dt_polys"]
    with create_model(model_dir=str(model_dir)) as direct:  # standard inference: the file itself, no cache
        expected = direct.predict(image)[0]["dt_polys"]
    np.testing.assert_array_equal(cached_boxes, expected)
    assert len(cached_boxes) != len(old_boxes) or not np.array_equal(cached_boxes, old_boxes)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete_manifest"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_corrupt_entry_is_detected_logged_and_rebuilt(tmp_path, shared_images, caplog, damage, backend):
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    model_dir = det_model_dir(tmp_path / "my_det")
    image = str(shared_images / "paragraph_en.jpg")
    with open_det(model_dir, backend) as model:
        artifact, expected = model.session.artifact, model.predict(image)[0]["dt_polys"]
    victim = max((p for p in artifact.rglob("*") if p.is_file() and p.name != "manifest.json"), key=lambda p: p.stat().st_size)
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    elif damage == "flip_byte":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        (artifact / "manifest.json").unlink()
    caplog.clear()
    with open_det(model_dir, backend) as model:
        assert model.session.artifact == artifact
        np.testing.assert_array_equal(model.predict(image)[0]["dt_polys"], expected)
    reasons = {"truncate": "truncated", "flip_byte": "fails its checksum", "delete_manifest": "no manifest"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("is unusable" in w and reasons[damage] in w and "rebuilding" in w for w in warnings), warnings
    assert any("built cache entry" in r.getMessage() for r in caplog.records)


def _build_in_child(model_path: str, cache_dir: str, start, results) -> None:
    os.environ[ENV_CACHE_DIR] = cache_dir
    start.wait()
    artifact = builder.build_engine("child", Path(model_path), "openvino", BackendConfig(cpu_num_threads=1), CPU, None)
    with artifact.open(Path(model_path), CPU) as session:
        output = float(session.run_one(np.ones((1, 3, 64, 64), np.float32))[0].sum())
    results.put((artifact.entry.built, str(artifact.entry.path), output))


def test_two_processes_building_the_same_entry_build_it_once(tmp_path):
    model = det_model_dir(tmp_path / "my_det") / "model.onnx"
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_build_in_child, args=(str(model), str(tmp_path / "c"), start, results)) for _ in range(2)]
    for w in workers:
        w.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    assert sorted(built for built, _, _ in outcomes) == [False, True]  # one built, the other waited and reused it
    assert outcomes[0][1:] == outcomes[1][1:]  # same entry, same results
    entry = Path(outcomes[0][1])
    assert not list(entry.parent.glob(".tmp-*"))  # no staging leftovers
    assert builder.build_engine("again", model, "openvino", BackendConfig(cpu_num_threads=1), CPU, None).entry.built is False


# Root writes anywhere, so as root the child drops to nobody, as a user would be; it imports what it needs
# first, because this machine's Python may live where nobody cannot read.
_READ_ONLY_CHILD = """
import os, sys, json, tempfile, uuid, filelock, platformdirs, onnxruntime, onnx
from hpinfer.models import create_model
import hpinfer.runtime.builder
if os.getuid() == 0:
    os.setgid(65534); os.setuid(65534)
with create_model(model_dir=sys.argv[1], use_hpip=True, hpi_config={"backend": "onnxruntime"}) as model:
    print(model.session.artifact)
"""


def test_a_read_only_model_dir_falls_back_to_the_user_cache():
    base = Path(tempfile.mkdtemp(prefix="hpinfer-ro-"))
    try:
        base.chmod(0o755)
        model_dir = det_model_dir(base / "my_det")
        user_cache = base / "user-cache"
        user_cache.mkdir(mode=0o777)
        user_cache.chmod(0o777)
        for path in (model_dir / "model.onnx", model_dir / "hpinfer.yaml"):
            path.chmod(0o444)
        model_dir.chmod(0o555)
        env = {**os.environ, ENV_CACHE_DIR: str(user_cache), "HOME": str(user_cache)}
        done = subprocess.run([sys.executable, "-c", _READ_ONLY_CHILD, str(model_dir)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        artifact = Path(done.stdout.strip().splitlines()[-1])
        assert artifact.is_relative_to(user_cache) and (artifact / "manifest.json").is_file()
        assert not (model_dir / ".cache").exists()
    finally:
        (base / "my_det").chmod(0o755)
        shutil.rmtree(base)


def _cli(*argv: str) -> argparse.Namespace:
    from hpinfer.cli import _parser

    return _parser().parse_args(argv)


def test_cache_list_and_clear_commands(tmp_path, capsys):
    with create_model(DET, use_hpip=True, hpi_config={"backend": "onnxruntime"}) as det:
        det_entry = det.session.artifact
    with create_model("ch_ppocr_mobile_v2.0_cls", use_hpip=True, hpi_config={"backend": "onnxruntime"}):
        pass
    assert cache_command.run(_cli("cache", "list")) == 0
    listing = capsys.readouterr().out
    assert DET in listing and "ch_ppocr_mobile_v2.0_cls" in listing and "2 entries in" in listing

    (det_entry / "model.optimized.onnx").write_bytes(b"broken")
    assert cache_command.run(_cli("cache", "list", "--model", DET)) == 0
    assert "CORRUPT: model.optimized.onnx is truncated" in capsys.readouterr().out

    assert cache_command.run(_cli("cache", "clear", "--model", DET)) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert not det_entry.exists()
    assert cache_command.run(_cli("cache", "list")) == 0
    assert "1 entry in" in capsys.readouterr().out


def test_build_command_prebuilds_every_engine_of_a_pipeline(capsys):
    args = _cli("build", "--pipeline", "OCR", "--hpi_config", '{"backend": "onnxruntime"}')
    assert build_command.run(args) == 0
    first = capsys.readouterr().out.splitlines()
    listed = list(resolve_pipeline("OCR").modules)  # every model of the file, switched on or not
    assert {"TextDetection", "TextLineOrientation", "TextRecognition"} <= set(listed)
    assert [line.split(":")[0] for line in first] == listed
    assert all(" built in " in line for line in first), first
    assert build_command.run(args) == 0
    assert all(" cached in " in line for line in capsys.readouterr().out.splitlines())


def test_gpu_entries_are_keyed_by_the_gpu_model_and_driver(tmp_path, monkeypatch):
    """A TensorRT engine or compiled kernels built on one GPU model must not be served on another."""
    model = det_model_dir(tmp_path) / "model.onnx"

    def key(device):
        return key_of(builder.engine_fields(model, "tensorrt", BackendConfig(), device, None))

    gpu = Device("gpu", 0)
    h200 = key(gpu)
    monkeypatch.setattr(builder, "gpu_name", lambda index: "NVIDIA L4")
    l4 = key(gpu)
    monkeypatch.setattr(builder, "driver_version", lambda: "999.1")
    assert len({h200, l4, key(gpu)}) == 3
    assert "gpu" not in builder.hardware_fields(CPU)  # CPU entries don't depend on what GPU is plugged in


def test_a_cached_engine_that_fails_to_open_is_rebuilt(tmp_path, shared_images, caplog):
    """An entry intact by its manifest that the engine still cannot load (a TensorRT engine of another build)
    is rebuilt, not given up (nor an AttributeError)."""
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    model_dir = det_model_dir(tmp_path / "my_det")
    image = str(shared_images / "paragraph_en.jpg")
    with open_det(model_dir) as model:
        artifact, expected = model.session.artifact, model.predict(image)[0]["dt_polys"]
    victim = artifact / "model.optimized.onnx"
    victim.write_bytes(b"not an onnx model")
    manifest_path = artifact / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][victim.name] = {"size": victim.stat().st_size, "sha256": hashlib.sha256(victim.read_bytes()).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))  # the cache sees nothing wrong: only the engine can tell
    caplog.clear()
    with open_det(model_dir) as model:
        assert model.session.artifact == artifact and model.session.backend == "onnxruntime"
        np.testing.assert_array_equal(model.predict(image)[0]["dt_polys"], expected)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("failed to open" in w and "rebuilding it" in w for w in warnings), warnings
