"""User-facing errors. Each message is one line that names the culprit and, where possible, the fix."""

EXIT_SOME_FAILED = 3  # a command finished, but some inputs or pages failed (each reported on stderr)


class HpinferError(Exception):
    """Base class: the CLI prints the message alone, without a traceback."""


class InputError(HpinferError):
    """An input (file, URL, bytes, array, PDF page) cannot be read or is not usable."""


class ConfigError(HpinferError):
    """A configuration value (hpi_config, pipeline YAML, option) is invalid."""


class ModelNotFoundError(ConfigError):
    """A model name or model_dir does not resolve to model files."""


class EngineUnavailableError(ConfigError):
    """The requested inference engine is not installed or cannot serve this model/device."""
