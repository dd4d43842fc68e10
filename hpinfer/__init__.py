"""hpinfer: fast vision and document AI inference on whatever hardware is at hand."""

from .errors import ConfigError, EngineUnavailableError, HpinferError, InputError, ModelNotFoundError
from .models import create_model
from .pipelines import create_pipeline

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "EngineUnavailableError", "HpinferError", "InputError", "ModelNotFoundError",
    "create_model", "create_pipeline", "__version__",
]
