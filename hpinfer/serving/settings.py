"""Every server knob in one frozen, validated object (pydantic), resolved once at the edge (CLI or caller)
and passed inward; worker processes (``--workers`` > 1) get it as JSON in an environment variable."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..device import Device
from ..errors import ConfigError

SETTINGS_ENV = "HPINFER_SERVE_SETTINGS"  # how worker processes (--workers > 1) receive the settings
LOG_LEVEL_ENV = "HPINFER_SERVE_LOG_LEVEL"
# After the drain: for requests cut short to receive their 503, then for uvicorn to close connections.
SHUTDOWN_GRACE_S = 3.0


def measured_defaults(device: Optional[str], pipeline_name: Optional[str]) -> Tuple[int, int]:
    """``(max_batch_size, inference_threads)`` that served fastest at concurrency 8 on this kind of device for this
    kind of pipeline (benchmarks/RESULTS.md; ``pipeline_name`` as in its YAML).

    CPU, OCR: batches of 8, one thread: every engine call already keeps all cores busy, so a second thread adds
    nothing (2 cores, ONNX Runtime 3.6 vs 3.8 requests/s, OpenVINO 7.2 vs 7.6) and batching costs little. CPU,
    layout_parsing: single pages in two threads: its many small engine calls (one text detection per region)
    leave ONNX Runtime's cores idle, 13.3 vs 9.2 requests/s (OpenVINO: 22.8 vs 23.8, within 5 %). GPU (torch
    engine, fp16, CUDA graphs, H200): single pages in two threads, OCR 108 requests/s against 78 with batches of 8
    in one thread and 47 with batches in two (new shapes stall the server); layout_parsing 122 against 94 one page
    at a time in one thread, 106 with batches of 8 and 121 with batches in two threads."""
    if Device.parse(device).is_gpu or pipeline_name == "layout_parsing":
        return 1, 2
    return 8, 1


def _pipeline_name(pipeline: str) -> Optional[str]:
    """The ``pipeline_name`` a bundled name or YAML path holds; None where it can't be read (creating the pipeline
    then says why)."""
    from ..pipelines.config import load_pipeline_file

    try:
        return load_pipeline_file(pipeline)[0].get("pipeline_name")
    except ConfigError:
        return None


def default_inflight_pixels() -> int:
    """``max_inflight_pixels`` for this machine: what a quarter of its memory holds at ``BYTES_PER_PIXEL``."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 * 2**30
    return max(40_000_000, min(400_000_000, memory // 4 // BYTES_PER_PIXEL))


# Peak memory per pixel of a page in flight (its rendering plus its text detector input), a bound measured on
# the OCR pipeline (benchmarks/RESULTS.md, "serving under hostile input"): the unit of the in-flight budget.
BYTES_PER_PIXEL = 40


class ServeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: str = "OCR"  # bundled name or YAML path
    device: Optional[str] = None
    use_hpip: Optional[bool] = None
    hpi_config: Optional[Dict[str, Any]] = None
    # Pipeline options at creation, e.g. {"use_doc_orientation_classify": true} to load the page orientation
    # model (optional models load only at creation; requests may then switch them per call).
    pipeline_options: Optional[Dict[str, Any]] = None
    # Batching: an idle batcher waits up to max_batch_delay_ms only while other requests are still being
    # decoded; a busy one batches whatever queued meanwhile (see batching.py).
    # max_batch_size: images per predict_batch call; inference_threads: batches in flight at once, each in its own
    # thread. None: measured per device and pipeline (``measured_defaults``, serving/README.md "Batching").
    max_batch_size: Optional[int] = Field(None, gt=0)
    max_batch_delay_ms: float = Field(10.0, ge=0)
    inference_threads: Optional[int] = Field(None, gt=0)
    max_queue: int = Field(64, gt=0)  # requests admitted (decoding, queued or running) before new ones get 503
    request_timeout_s: float = Field(120.0, gt=0)
    # On SIGTERM, how long in-flight requests may take; shutdown then takes at most SHUTDOWN_GRACE_S more.
    drain_timeout_s: float = Field(60.0, ge=0)
    max_body_mb: float = Field(50.0, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)  # per image or rendered PDF page (decompression bombs)
    max_pdf_pages: int = Field(20, gt=0)
    # Memory: PDF pages render at 144 dpi but at most this long on their longer side; the text detector's
    # input at most this long whatever textDetLimitSideLen asks (PaddleX's max_side_limit); the budget of what
    # requests and jobs in flight hold (pages: rendered page + detector input; bodies and decoded files at
    # BYTES_PER_PIXEL bytes a pixel) before more waits its turn; how long a request may wait for its start
    # (its body and first page) before it gets 503 + Retry-After.
    max_render_side: int = Field(4000, ge=32)
    max_det_side: int = Field(4000, ge=32)
    max_inflight_pixels: int = Field(default_factory=default_inflight_pixels, gt=0)
    max_queue_wait_s: float = Field(60.0, gt=0)
    url_timeout_s: float = Field(15.0, gt=0)
    max_download_mb: float = Field(50.0, gt=0)
    allow_private_urls: bool = False  # SSRF guard off for private, loopback and link-local addresses
    api_key: Optional[str] = Field(None, repr=False)
    cors_origins: Tuple[str, ...] = ()
    visualize: bool = True  # PaddleX's default: result images unless the request says visualize: false
    # Async jobs (serving/jobs): on when jobs_dir is set, or with the web page (ui; then in a temporary folder).
    jobs_dir: Optional[str] = None
    jobs_max_pages: int = Field(1000, gt=0)  # per job (max_pdf_pages is for synchronous requests)
    jobs_retention_h: float = Field(24.0, gt=0)  # finished jobs and their files are removed after this
    jobs_per_key: int = Field(8, gt=0)  # unfinished jobs per API key (when api_key is set)
    ui: bool = False  # the web page at /

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError("; ".join(_problem(e) for e in err.errors())) from None

    @model_validator(mode="before")
    @classmethod
    def _measured_batching(cls, values: Any) -> Any:
        """Batching values left out (None) take what was measured fastest for this device and pipeline."""
        if isinstance(values, dict) and (values.get("max_batch_size") is None or values.get("inference_threads") is None):
            batch_size, threads = measured_defaults(values.get("device"), _pipeline_name(values.get("pipeline") or "OCR"))
            measured = {"max_batch_size": batch_size, "inference_threads": threads}
            values = {**values, **{k: v for k, v in measured.items() if values.get(k) is None}}
        return values

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    @property
    def max_download_bytes(self) -> int:
        return int(self.max_download_mb * 2**20)

    def load_pipeline(self) -> Any:
        from ..pipelines import create_pipeline

        return create_pipeline(
            self.pipeline, device=self.device, use_hpip=self.use_hpip, hpi_config=self.hpi_config,
            **(self.pipeline_options or {}),
        )

    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls) -> "ServeSettings":
        return cls.model_validate_json(os.environ[SETTINGS_ENV])


def _problem(error: Dict[str, Any]) -> str:
    name = ".".join(str(p) for p in error["loc"]) or "settings"
    bound = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}"}.get(error["type"])
    if bound:
        return f"{name} must be {bound.format(**error['ctx'])}, got {error['input']!r}"
    return f"{name}: {'unknown setting' if error['type'] == 'extra_forbidden' else error['msg']}, got {error.get('input')!r}"
