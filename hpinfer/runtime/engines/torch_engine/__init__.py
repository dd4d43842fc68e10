"""PyTorch engine: ONNX models through hpinfer's own translator (``runtime.onnx_to_torch``), CPU or CUDA.

Split as Polygraphy splits loaders from runners: ``engine`` makes a session (translate, place, compile or load an
AOT package: ``TorchEngine``), ``session`` runs it (``TorchSession``), ``graphs`` holds the CUDA-graph execution
contexts, ``aot`` the AOTInductor packages kept in the model cache, ``module`` the translated model as the
callable the others run.

Precision: fp32 keeps TF32 off unless asked (fidelity with the CPU path); fp16/bf16 use the
translator's mixed policy, calibrated on page-like inputs of the ``dynamic_shapes`` opt shape.

Options come from ``backend_config.torch`` (``hpinfer.config.TorchConfig``): ``compile`` (a torch.compile
mode, opt-in: compiling per model and shape at every start), ``aot``, ``cuda_graphs``, ``tf32``, ``contexts``,
``channels_last``, ``cudnn_benchmark`` and ``device_preprocess`` (detectors hand over the resized uint8 image and it
is normalised on the GPU, see ``TorchSession.image_runner``).
"""

from ....config import TorchConfig
from .engine import TorchEngine
from .graphs import batch_buckets
from .session import TorchSession

# The engine's options are ``BackendConfig.torch``; the old name stays for callers of ``load(..., options)``.
TorchOptions = TorchConfig

__all__ = ["TorchEngine", "TorchOptions", "TorchSession", "batch_buckets"]
