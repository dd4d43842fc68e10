"""``TorchEngine``: makes a ``TorchSession`` from an ONNX file (translate, place on the device, compile or load an
AOT package). Public methods take what callers give and validate it; ``_load_impl`` does the work."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Optional

from ....config import BackendConfig, TorchConfig
from ....device import Device
from ...hardware import cpu_count, cpu_has_fast_bf16
from ..base import Engine
from .aot import aot_callable
from .module import RANGES_FILE, _convert, _Entry, value_ranges
from .session import TorchSession

log = logging.getLogger(__name__)


class TorchEngine(Engine):
    name = "torch"
    module = "torch"
    pip_name = "torch"
    bakes_shape_bounds = True

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        import torch

        if precision == "int8":
            return "int8 is not supported by the torch engine (fp32, fp16 on GPU, bf16)"
        if not device.is_gpu:
            if precision == "fp16":
                return "fp16 on CPU is slower than fp32 in torch; use fp32, or bf16 on a CPU with AVX512-BF16/AMX"
            if precision == "bf16" and not cpu_has_fast_bf16():
                return "bf16 needs a CPU with AVX512-BF16 or AMX"
            return None
        if not torch.cuda.is_available():
            return f"this torch build ({torch.__version__}) has no CUDA, or no NVIDIA GPU is visible"
        if device.index >= torch.cuda.device_count():
            return f"{device} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(device.index)} has no bf16 support"
        return None

    @classmethod
    def exact(cls, config: BackendConfig) -> bool:
        """Padding to shape buckets changes results near the padded edges (and everywhere through global pooling,
        e.g. the PP-LCNet SE blocks of PP-OCR's detectors)."""
        return super().exact(config) and not config.torch.shape_buckets

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device, options: Optional[TorchConfig] = None) -> TorchSession:
        """``options`` (if given) replaces ``config.torch``. An AOT package goes to the model cache beside the model."""
        if options is not None:
            config = config.model_copy(update={"torch": options})
        cls._validate(model_path, config, device)
        return cls._load_impl(model_path, config, device, None)

    @classmethod
    def build(cls, model_path: Path, config: BackendConfig, device: Device, out_dir: Path) -> None:
        """The ONNX file and, for fp16/bf16, the calibrated value ranges of its mixed plan (a warm start skips the
        calibration runs)."""
        from ...onnx_to_torch import load_graph

        shutil.copyfile(model_path, out_dir / "model.onnx")
        if config.precision != "fp32":
            graph = load_graph(model_path)
            ranges = value_ranges(graph, (config.dynamic_shapes or {}).get(graph.inputs[0][0]))
            (out_dir / RANGES_FILE).write_text(json.dumps(ranges, sort_keys=True), encoding="utf-8")

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> TorchSession:
        """From the engine's cache entry (the ONNX file, the value ranges); an AOT package is a sibling entry."""
        cls._validate(artifact_dir / "model.onnx", config, device)
        ranges_file = artifact_dir / RANGES_FILE
        ranges = json.loads(ranges_file.read_text(encoding="utf-8")) if ranges_file.is_file() else None
        return cls._load_impl(artifact_dir / "model.onnx", config, device, artifact_dir.parent, ranges)

    @classmethod
    def _load_impl(cls, model_path: Path, config: BackendConfig, device: Device, aot_home: Optional[Path],
                   ranges: Optional[Dict[str, float]] = None) -> TorchSession:
        import torch

        from ...onnx_to_torch import load_graph

        options = config.torch
        graph = load_graph(model_path)
        module = _convert(graph, config.precision, (config.dynamic_shapes or {}).get(graph.inputs[0][0]), ranges).eval()
        if device.is_gpu:
            torch.backends.cudnn.benchmark = options.cudnn_benchmark  # process-wide too
            torch.backends.cudnn.allow_tf32 = options.tf32  # process-wide in torch: the last session loaded sets it
            torch.backends.cuda.matmul.allow_tf32 = options.tf32
            module = module.to(f"cuda:{device.index}")
            where = f"CUDA {torch.cuda.get_device_name(device.index)}"
        else:
            torch.set_num_threads(config.cpu_num_threads or cpu_count())
            where = f"CPU threads={torch.get_num_threads()}"
        entry = _Entry(module, options.channels_last)
        if options.channels_last:
            module.to(memory_format=torch.channels_last)
        fn: Callable = entry if options.channels_last else module
        aot = None
        if options.aot or options.compile != "none":
            _keep_inductor_cache()
        if options.aot:
            fn, aot = aot_callable(entry, graph, model_path, config, device, aot_home)
        elif options.compile != "none":
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * options.max_graphs)
            mode = None if options.compile == "default" else options.compile
            fn = torch.compile(fn, mode=mode, dynamic=False, fullgraph=True)
        own_graphs = device.is_gpu and options.own_cuda_graphs
        features = [
            f for f, on in (
                ("cuda-graphs", own_graphs), (f"compile={options.compile}", options.compile != "none"),
                ("aot", options.aot), ("tf32", options.tf32), ("channels-last", options.channels_last),
                (f"contexts={options.contexts}", device.is_gpu and options.contexts > 1),
                ("no-cudnn-benchmark", device.is_gpu and not options.cudnn_benchmark),
                ("shape-buckets", options.shape_buckets),
            ) if on
        ]
        settings = f"torch {torch.__version__} {where} precision={config.precision} {' '.join(features)}".strip()
        session = TorchSession(module, graph, device, config, settings, fn)
        session.aot = aot
        return session



def _keep_inductor_cache() -> None:
    """Inductor's compiled kernels and autotuning results go to hpinfer's cache (not /tmp, which a reboot or a
    container restart empties), so a later start reuses them; a TORCHINDUCTOR_CACHE_DIR the user set wins."""
    from ...cache import user_cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_cache_dir() / "torchinductor"))
