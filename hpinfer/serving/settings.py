"""Every server knob in one frozen object, resolved once at the edge (CLI or caller) and passed inward."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..device import Device
from ..errors import ConfigError

SETTINGS_ENV = "HPINFER_SERVE_SETTINGS"  # how worker processes (--workers > 1) receive the settings
LOG_LEVEL_ENV = "HPINFER_SERVE_LOG_LEVEL"


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


@dataclass(frozen=True)
class ServeSettings:
    pipeline: str = "OCR"  # bundled name or YAML path
    device: Optional[str] = None
    use_hpip: Optional[bool] = None
    hpi_config: Optional[Dict[str, Any]] = None
    # Pipeline options at creation, e.g. {"use_doc_orientation_classify": true} to load the page orientation
    # model (optional models load only at creation; requests may then switch them per call).
    pipeline_options: Optional[Dict[str, Any]] = None
    # Batching: an idle batcher waits up to max_batch_delay_ms only while other requests are still being
    # decoded; a busy one batches whatever queued meanwhile (see batcher.py).
    # max_batch_size: images per predict_batch call; inference_threads: batches in flight at once, each in its own
    # thread. None: measured per device and pipeline (``measured_defaults``, serving/README.md "Batching").
    max_batch_size: Optional[int] = None
    max_batch_delay_ms: float = 10.0
    inference_threads: Optional[int] = None
    max_queue: int = 64  # requests admitted (decoding, queued or running) before new ones get 503
    request_timeout_s: float = 120.0
    drain_timeout_s: float = 60.0  # on SIGTERM, how long in-flight requests may take before the server exits
    max_body_mb: float = 50.0
    max_pixels: int = 40_000_000  # per image or rendered PDF page (decompression bombs)
    max_pdf_pages: int = 20
    url_timeout_s: float = 15.0
    max_download_mb: float = 50.0
    allow_private_urls: bool = False  # SSRF guard off for private, loopback and link-local addresses
    api_key: Optional[str] = field(default=None, repr=False)
    cors_origins: Tuple[str, ...] = ()
    visualize: bool = True  # PaddleX's default: result images unless the request says visualize: false
    # Async jobs (serving/jobs): on when jobs_dir is set, or with the web page (ui; then in a temporary folder).
    jobs_dir: Optional[str] = None
    jobs_max_pages: int = 1000  # per job (max_pdf_pages is for synchronous requests)
    jobs_retention_h: float = 24.0  # finished jobs and their files are removed after this
    jobs_per_key: int = 8  # unfinished jobs per API key (when api_key is set)
    ui: bool = False  # the web page at /

    def __post_init__(self) -> None:
        if self.max_batch_size is None or self.inference_threads is None:
            batch_size, threads = measured_defaults(self.device, _pipeline_name(self.pipeline))
            if self.max_batch_size is None:
                object.__setattr__(self, "max_batch_size", batch_size)
            if self.inference_threads is None:
                object.__setattr__(self, "inference_threads", threads)
        positive = {
            "max_batch_size": self.max_batch_size, "inference_threads": self.inference_threads, "max_queue": self.max_queue, "max_pixels": self.max_pixels,
            "max_pdf_pages": self.max_pdf_pages, "request_timeout_s": self.request_timeout_s,
            "max_body_mb": self.max_body_mb, "url_timeout_s": self.url_timeout_s,
            "max_download_mb": self.max_download_mb, "jobs_max_pages": self.jobs_max_pages,
            "jobs_retention_h": self.jobs_retention_h, "jobs_per_key": self.jobs_per_key,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        for name in ("max_batch_delay_ms", "drain_timeout_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")

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
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeSettings":
        values = json.loads(os.environ[SETTINGS_ENV])
        values["cors_origins"] = tuple(values["cors_origins"])
        return cls(**values)
