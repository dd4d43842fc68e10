"""Serving through a distributed engine (Triton, Ray Serve) behind the same HTTP front-end as basic serving.

The front-end is ``create_app`` itself (schemas, adapters, gate, batcher, errors, drain): it is handed a
``RemotePipeline``, a stand-in whose ``predict_batch``/``predict`` send each batch the batcher forms to the
engine, whose instances (``Replica``) each hold a real pipeline. So requests, responses and errors are
those of basic serving by construction; only where the pipeline runs changes.

A call that an instance could not finish (it died, or the engine lost it) is retried on another instance
up to ``RETRIES`` times, then answered 503 + Retry-After: an accepted request never hangs nor is dropped
silently. Results travel pickled between our own processes (loopback or the cluster's private network).

Instance batching (``--instance_batching``): an instance combines the calls of several front-end threads
that arrive within ``max_batch_delay_ms`` into one pipeline call (``Replica.run_many``; Triton's dynamic
batcher, Ray Serve's ``@serve.batch``). It goes through ``predict_batch`` as the front-end's own batches
do, so results are those of basic serving's batching; what it buys is fewer, larger model calls when
several front-end threads feed one instance (a GPU). Off by default on a CPU, where a model call already
keeps every core busy and waiting for company only adds latency.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import ConfigError
from .metrics import stage_timers, stage_totals

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("hpinfer.serving")
ENGINES = ("basic", "triton", "ray")
RETRIES = 6  # with BACKOFF_S doubling in between: ~6 s for the engine to route around (or replace) a dead instance
BACKOFF_S = 0.2


class InstanceFailed(Exception):
    """An instance could not finish a call (it died or went away): the call may be retried on another."""


@dataclass(frozen=True)
class EngineOptions:
    """How many pipeline instances serve, and on what (the HTTP front-end's knobs stay in ``ServeSettings``)."""

    engine: str = "basic"
    instances: int = 1  # basic: worker processes; triton: the model's instance group; ray: replicas
    max_instances: Optional[int] = None  # ray: autoscaling up to this many replicas on queue length
    address: Optional[str] = None  # ray: an existing cluster to join ("auto" or host:port)
    triton_ports: Tuple[int, int, int] = (8000, 8001, 8002)  # Triton's own HTTP, gRPC and metrics ports
    batching: Optional[bool] = None  # instance batching (see above); None: on on a GPU, off on a CPU

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.instances < 1:
            raise ConfigError(f"--instances must be >= 1, got {self.instances}")
        if self.max_instances is not None and self.max_instances < self.instances:
            raise ConfigError(f"--max_instances ({self.max_instances}) must be >= --instances ({self.instances})")
        if self.engine != "ray" and (self.max_instances is not None or self.address):
            raise ConfigError("--max_instances and --address are options of --engine ray")
        if self.engine == "basic" and self.batching is not None:
            raise ConfigError("--instance_batching is an option of --engine triton and ray (basic serving batches "
                              "in its one front-end: --max_batch_size)")


Call = Tuple[str, List["np.ndarray"], Dict[str, Any]]  # method, pages, options
Stages = Dict[Tuple[str, str], float]  # seconds per (module, stage), as the front-end's /metrics counts them
# instance, pages in the pipeline call that answered, its stage seconds (once per call), (status, value)
Answer = Tuple[str, int, Stages, Tuple[str, Any]]


def batching_on(settings: Any, options: EngineOptions) -> bool:
    """Instance batching as asked, else by device; the startup log says which and why."""
    from ..device import Device

    gpu = Device.parse(settings.device).is_gpu
    on = gpu if options.batching is None else options.batching
    why = ("--instance_batching" if options.batching is not None else
           "default on a GPU" if gpu else "default on a CPU: a model call already keeps every core busy (measured), "
           "so waiting for other calls would only add latency")
    if on:
        log.info("instance batching on (%s): an instance combines the calls of up to %d front-end thread(s) arriving "
                 "within %g ms into one predict_batch call; results as basic serving's batching (each page and text "
                 "line padded as it would be alone: no drift on exact engines)",
                 why, settings.inference_threads, settings.max_batch_delay_ms)
    else:
        log.info("instance batching off (%s): each front-end batch is its own pipeline call", why)
    return on


class _Drawn:
    """A result's picture drawn before it travelled (its drawing function is a model's method, which can't)."""

    def __init__(self, image: np.ndarray):
        self.image = image

    def __call__(self, result: Any) -> np.ndarray:
        return self.image


class _Sent(NamedTuple):
    """In place of a result's ``image`` that is the page the front-end sent (its ``index``th): the
    front-end puts its own copy back (``_received``), so the pixels don't travel back (most of a result's bytes)."""

    index: int


def _portable(results: Sequence[Any], pages: Sequence[np.ndarray]) -> List[Any]:
    sent = {id(page): i for i, page in enumerate(pages)}
    for result in results:
        if inspect.ismethod(getattr(result, "_visualize", None)):
            result._visualize = _Drawn(result.img)
        if id(getattr(result, "image", None)) in sent:
            result.image = _Sent(sent[id(result.image)])
    return list(results)


def _received(results: List[Any], pages: Sequence[np.ndarray]) -> List[Any]:
    for result in results:
        if isinstance(getattr(result, "image", None), _Sent):
            result.image = pages[result.image.index]
    return results


class Replica:
    """One instance: its own pipeline, warmed up before it takes requests. ``run_many`` answers each call
    with an ``Answer`` whose outcome is ``("ok", results)`` or ``("error", exception)``: an input error must
    reach the front-end as itself, to be answered as basic serving answers it."""

    def __init__(self, settings: Any, tag: str = ""):
        from .adapters import ADAPTERS
        from .app import warm_up_image

        self.pipeline = settings.load_pipeline()
        self.name = f"{socket.gethostname()}:{os.getpid()}{tag}"
        start = time.perf_counter()
        ADAPTERS[self.pipeline.settings.pipeline_name].run(self.pipeline, [warm_up_image()], {})
        log.info("instance %s warm (%.1f s)", self.name, time.perf_counter() - start)
        self.timers = stage_timers(self.pipeline)

    def describe(self) -> Dict[str, Any]:
        return {"pipeline_name": self.pipeline.settings.pipeline_name, "sub_modules": list(self.pipeline.sub_modules)}

    def _run(self, method: str, images: List[np.ndarray], options: Dict[str, Any]) -> Answer:
        try:
            outcome: Tuple[str, Any] = "ok", list(getattr(self.pipeline, method)(images, **options))
        except Exception as exc:  # noqa: BLE001 - handed to the front-end, which answers as basic serving does
            outcome = "error", exc
        return self.name, len(images), dict(stage_totals(self.timers)), outcome

    def run_many(self, calls: Sequence[Call]) -> List[Answer]:
        """Several front-end calls: those with the same method and options share one pipeline call. One that
        fails is run again call by call, so that a page that breaks it fails only its own call (as the
        front-end's batcher does page by page)."""
        groups: Dict[str, List[int]] = defaultdict(list)
        for i, (method, _, options) in enumerate(calls):
            groups[json.dumps([method, options], sort_keys=True, default=str)].append(i)
        answers: List[Answer] = [None] * len(calls)  # type: ignore[list-item]
        for members in groups.values():
            method, _, options = calls[members[0]]
            pages = [image for i in members for image in calls[i][1]]
            name, size, stages, (status, value) = self._run(method, pages, options)
            if status == "error" and len(members) > 1:
                for i in members:
                    answers[i] = self._run(*calls[i])
            else:
                start = 0
                for i in members:
                    end = start + len(calls[i][1])
                    answers[i] = name, size, stages, (status, value[start:end] if status == "ok" else value)
                    start, stages = end, {}
        for (_, pages, _), (name, size, stages, (status, value)) in zip(calls, answers):
            if status == "ok":
                _portable(value, pages)
        return answers

    def close(self) -> None:
        self.pipeline.close()


Send = Callable[[str, List["np.ndarray"], Dict[str, Any]], Answer]


class RemotePipeline:
    """What ``create_app`` drives in place of a pipeline: each call goes to an engine instance through ``send``."""

    predictors: Tuple[Any, ...] = ()  # no stage timers here: the instances run the models

    def __init__(self, description: Dict[str, Any], send: Send, close: Callable[[], None] = lambda: None):
        self.settings = SimpleNamespace(pipeline_name=description["pipeline_name"])
        self.sub_modules = dict.fromkeys(description["sub_modules"])
        self._send = send
        self._close = close
        self.on_served: Callable[[str, int, Stages], None] = lambda instance, pages, stages: None  # see ``count_instances``

    def predict_batch(self, images: List[np.ndarray], **options: Any) -> List[Any]:
        return self._call("predict_batch", images, options)

    def predict(self, images: List[np.ndarray], **options: Any) -> List[Any]:
        return self._call("predict", list(images), options)

    def _call(self, method: str, images: List[np.ndarray], options: Dict[str, Any]) -> List[Any]:
        from fastapi import HTTPException

        from .app import RETRY_AFTER_S

        for attempt in range(1, RETRIES + 1):
            try:
                name, pages, stages, (status, value) = self._send(method, images, options)
                break
            except InstanceFailed as err:
                log.warning("instance failed (attempt %d of %d): %s", attempt, RETRIES, err)
                if attempt < RETRIES:
                    time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        else:
            raise HTTPException(503, f"no instance could finish the request after {RETRIES} attempts; retry later",
                                headers={"Retry-After": RETRY_AFTER_S})
        self.on_served(name, pages, stages)
        if status == "error":
            raise value
        return _received(value, images)

    def close(self) -> None:
        self._close()


def count_instances(app: Any, pipeline: RemotePipeline) -> None:
    """In the front-end's /metrics: batches answered per instance (which instances serve, and how evenly), the
    pages of the pipeline calls that answered them (above the front-end's own batch sizes when instances
    combine calls), and the instances' stage seconds (basic serving's ``hpinfer_stage_seconds``)."""
    from prometheus_client import Counter, Histogram

    from .metrics import BATCH_BUCKETS, add_stages

    metrics = app.state.service.metrics
    registry = metrics.registry
    counter = Counter("hpinfer_instance_calls", "Batches answered per engine instance", ["instance"], registry=registry)
    sizes = Histogram("hpinfer_instance_batch_size", "Pages per pipeline call in the engine's instances (front-end "
                      "batches answered; one call combining several is counted once for each)",
                      buckets=BATCH_BUCKETS, registry=registry)

    def served(instance: str, pages: int, stages: Stages) -> None:
        counter.labels(instance).inc()
        sizes.observe(pages)
        add_stages(metrics, stages)

    pipeline.on_served = served


def serve(settings: Any, options: EngineOptions, **uvicorn_options: Any) -> None:
    """Start the engine's instances, then the front-end (which holds enough batches in flight to keep every
    instance busy) on the host and port asked for; returns when the front-end has drained and stopped."""
    import uvicorn

    from .app import create_app

    if options.engine == "triton":
        from .triton import started
    else:
        from .ray_app import started
    most = options.max_instances or options.instances
    front = settings.model_copy(update={"inference_threads": settings.inference_threads * most})
    with started(settings, replace(options, batching=batching_on(settings, options))) as pipeline:
        app = create_app(front, pipeline)
        count_instances(app, pipeline)
        # uvicorn re-raises the signal that stopped it once it is done, with the handler it found installed:
        # a no-op one here, so that the engine is stopped (the ``with``) before this process exits.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: None)
        uvicorn.run(app, **uvicorn_options)
