"""TensorRT through its Python API (TensorRT 10): ONNX parser → builder → serialized engine → execution context.

Split as Polygraphy splits loaders from runners: ``builder`` makes the serialized engine (one optimization profile,
precision flags, a timing cache per GPU), ``session`` runs it (static buffers and a CUDA graph per input shape,
least recently used shapes dropped), ``engine`` is the ``Engine`` whose public methods validate and whose
``_impl`` methods do the work. Cache entries are keyed by the GPU model and driver (``builder.hardware_fields`` of
the runtime); an entry TensorRT cannot deserialize is rebuilt (``loader``). int8 is quantized symmetric (zero
points 0), as TensorRT requires.

Not run in this repository's CI nor on the GPU lent to it (no tensorrt package there): the tests skip
without it.
"""

from .builder import DEFAULT_RANGE, _profile_shapes
from .engine import TensorRTEngine

__all__ = ["DEFAULT_RANGE", "TensorRTEngine", "_profile_shapes"]
