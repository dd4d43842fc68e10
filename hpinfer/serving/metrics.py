"""Prometheus metrics, in a registry of the app's own (several apps can live in one process, as in tests).

Per-stage times come from the pipeline's existing ``StageTimer`` spans (the ones ``hpinfer bench``
reads): switched on at start-up, drained after every batch by the inference thread, so they cost a
``perf_counter`` pair per span and never grow.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Dict, List, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hpinfer_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "hpinfer_request_duration_seconds", "HTTP request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge("hpinfer_requests_in_flight", "Inference requests admitted and not yet answered", registry=r)
        self.queue_depth = Gauge("hpinfer_queue_depth", "Images waiting for a batch", registry=r)
        self.budget_used = Gauge("hpinfer_budget_used_pixels",
                                 "Memory budget held by requests and jobs in flight (--max_inflight_pixels)", registry=r)
        self.batch_size = Histogram("hpinfer_batch_size", "Images per predict_batch call", buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "hpinfer_batch_duration_seconds", "Time per predict_batch call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.stage_seconds = Counter(
            "hpinfer_stage_seconds", "Time spent per pipeline module and stage (call, infer, pre, post, crop)",
            ["module", "stage"], registry=r,
        )

    def track(self, in_flight: Callable[[], float], queue_depth: Callable[[], float]) -> None:
        self.in_flight.set_function(in_flight)
        self.queue_depth.set_function(queue_depth)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def stage_timers(pipeline: Any) -> List[Tuple[str, Any]]:
    """(module name, timer) for the pipeline's own work and each of its models; switches them on."""
    timers = [("pipeline", pipeline.timer)] if hasattr(pipeline, "timer") else []
    timers += [(predictor.name, predictor.timer) for predictor in pipeline.predictors]
    for _, timer in timers:
        timer.enabled = True
    return timers


def record_stages(metrics: Metrics, timers: List[Tuple[str, Any]]) -> None:
    """Called by the inference thread after each batch: adds the spans recorded since the last call."""
    for module, timer in timers:
        totals: Dict[str, float] = defaultdict(float)
        for stage, start, end in timer.drain():
            totals[stage] += end - start
        for stage, seconds in totals.items():
            metrics.stage_seconds.labels(module, stage).inc(seconds)
