"""``hpinfer serve --engine ray``: a Ray Serve application per pipeline, behind basic serving's HTTP front-end.

Its replicas (``--instances``; autoscaled up to ``--max_instances`` on their queue length; on a GPU each
asks for 1/N of it, so N share one) each hold a warmed-up pipeline (``remote.Replica``). This process is
a Ray driver running the front-end; it sends the batches its batcher forms to the replicas through a
deployment handle, which routes each to the least busy replica on any node. ``--address`` joins an
existing cluster (``ray start --head`` on one machine, ``ray start --address ...`` on the others).
Ray Serve restarts a replica that dies; the front-end retries the calls it lost on another one.

With instance batching on (``remote.batching_on``; off by default on a CPU) a replica takes its calls
through ``@serve.batch``: the calls of up to ``--inference_threads`` front-end threads arriving within
``--max_batch_delay_ms`` share one pipeline call (``Replica.run_many``), run in a thread so that the next
batch gathers meanwhile, and batches formed while the pipeline was busy join its next call (``_Combiner``).
Off, each call is its own pipeline call, with no wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..device import Device
from .pages import PageWriter, SharedPages, read
from .remote import Answer, Call, EngineOptions, InstanceFailed, RemotePipeline, Replica

log = logging.getLogger("hpinfer.serving")
STOP_TIMEOUT_S = 20.0
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
BY_VALUE_MAX_BYTES = 3 << 20  # pixels of a batch sent by value (below the replica's 4 MB gRPC message limit)


def app_name(settings: Any) -> str:
    return "hpinfer-" + "".join(c if c.isalnum() else "-" for c in os.path.basename(settings.pipeline)).strip("-")


class _Combiner:
    """One pipeline call at a time, taking every batch that waits. ``@serve.batch`` alone gathers calls only
    within its window after the first: under load each call that arrived during a pipeline call would form
    its own batch and run alone after it (measured: with two front-end threads per replica, none combined)."""

    def __init__(self, run_many: Callable[[List[Call]], List[Answer]]):
        self._run_many = run_many
        self._waiting: List[Tuple[List[Call], asyncio.Future]] = []
        self._lock = asyncio.Lock()

    async def run(self, calls: List[Call]) -> List[Answer]:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((calls, future))
        async with self._lock:
            if self._waiting:
                taken, self._waiting = self._waiting, []
                try:
                    answers = await asyncio.to_thread(self._run_many, [call for batch, _ in taken for call in batch])
                except BaseException as err:  # noqa: BLE001 - every batch taken gets it
                    for _, waiting in taken:
                        waiting.set_exception(err)
                    raise
                start = 0
                for batch, waiting in taken:
                    waiting.set_result(answers[start:start + len(batch)])
                    start += len(batch)
        return await future


Pages = Union[List[np.ndarray], SharedPages]


def _pages(images: Pages) -> Optional[List[np.ndarray]]:
    """The call's pages, from the front-end's shared memory if they are there (None: not reachable from here)."""
    return read(images) if isinstance(images, SharedPages) else images


def _application(settings: Any, options: EngineOptions) -> Any:
    from ray import serve

    threads = settings.inference_threads  # the calls a replica may get at once (the most @serve.batch waits for)

    class PipelineReplica:
        def __init__(self, settings: Any):
            import ray

            self.replica = Replica(settings, tag="@" + ray.get_runtime_context().get_node_id()[:8])
            self.combiner = _Combiner(self.replica.run_many)

        def describe(self) -> Dict[str, Any]:
            return self.replica.describe()

        def _run(self, method: str, images: Pages, call_options: Dict[str, Any]) -> Optional[Answer]:
            images = _pages(images)
            return None if images is None else self.replica.run_many([(method, images, call_options)])[0]

        if threads == 1:  # one call at a time: run on the replica's event loop, not handed on to its thread pool
            async def call(self, method: str, images: Pages, call_options: Dict[str, Any]) -> Optional[Answer]:
                return self._run(method, images, call_options)
        else:
            def call(self, method: str, images: Pages, call_options: Dict[str, Any]) -> Optional[Answer]:
                return self._run(method, images, call_options)

        async def batched_call(self, method: str, images: Pages, call_options: Dict[str, Any]) -> Optional[Answer]:
            images = _pages(images)
            return None if images is None else await self._batch((method, images, call_options))

        @serve.batch(max_batch_size=threads, max_concurrent_batches=threads, batch_wait_timeout_s=settings.max_batch_delay_ms / 1000)
        async def _batch(self, calls: List[Call]) -> List[Answer]:
            return await self.combiner.run(calls)

        def __del__(self) -> None:
            self.replica.close()

    gpu = Device.parse(settings.device).is_gpu
    most = options.max_instances or options.instances
    scaling: Dict[str, Any] = {"num_replicas": options.instances}
    if most > options.instances:  # queue length per replica decides: each takes inference_threads batches at once
        scaling = {"autoscaling_config": {"min_replicas": options.instances, "max_replicas": most,
                                          "target_ongoing_requests": settings.inference_threads}}
    deployment = serve.deployment(
        # Batching on: up to ``threads`` batches formed at once, so @serve.batch wants threads x threads (the
        # front-end sends no more than ``threads`` per replica).
        PipelineReplica, name="pipeline", max_ongoing_requests=threads * threads if options.batching else threads,
        ray_actor_options={"num_cpus": 0 if gpu else 1, "num_gpus": 1 / most if gpu else 0}, **scaling,
    )
    return deployment.bind(settings)


@contextlib.contextmanager
def started(settings: Any, options: EngineOptions) -> Iterator[RemotePipeline]:
    """The application running (replicas loaded and warm), as the stand-in pipeline the front-end drives."""
    if not options.address or options.address.split(":")[0] in ("127.0.0.1", "localhost"):
        # A cluster on this machine: Ray's switch for keeping it on loopback (named for macOS and Windows),
        # read when ray is imported.
        os.environ.setdefault(LOOPBACK_ENV, "0")
    import grpc
    import ray
    from ray import serve

    most = options.max_instances or options.instances
    if options.address:
        ray.init(address=options.address, log_to_driver=False)
    else:  # with a (logical) core for every replica that may run
        ray.init(num_cpus=max(os.cpu_count() or 1, most), include_dashboard=False, log_to_driver=False)
    name = app_name(settings)
    try:
        serve.start(proxy_location="Disabled")  # the front-end is this process: Ray's HTTP proxy isn't needed
        log.info("ray: starting %d replica(s) of %s%s", options.instances, settings.pipeline,
                 f" (autoscaling up to {most})" if most > options.instances else "")
        handle = serve.run(_application(settings, options), name=name, route_prefix=None)
        description = handle.describe.remote().result()
        log.info("ray: application %s running: %s", name, serve.status().applications[name].status)

        errors = ray.exceptions  # the replica went away (died, OOM-killed, its node lost) before it answered
        lost = (errors.RayActorError, errors.ActorUnavailableError, errors.OutOfMemoryError, errors.WorkerCrashedError,
                errors.NodeDiedError, grpc.RpcError)  # the last: by value, a call cut off in the middle

        # Calls by value: the call and its answer travel over gRPC straight to the replica, not through Ray's
        # object store (measured: ~4 ms less a call for a 1.36 MB page). Their pages go through shared memory
        # (``pages``) to a replica on this machine; to one elsewhere in the call itself: by value up to
        # BY_VALUE_MAX_BYTES (the replica's gRPC server takes 4 MB at most), by reference above.
        by_reference = handle.batched_call if options.batching else handle.call
        by_value = by_reference.options(_by_reference=False, request_serialization="pickle", response_serialization="pickle")
        pages = PageWriter()

        def send(method: str, images: List[np.ndarray], call_options: Dict[str, Any]) -> Any:
            timeout = settings.request_timeout_s
            try:
                shared = pages.write(images)
                answer = None if shared is None else by_value.remote(method, shared, call_options).result(timeout_s=timeout)
                if answer is None:  # the replica is on another machine
                    call = by_value if sum(image.nbytes for image in images) <= BY_VALUE_MAX_BYTES else by_reference
                    answer = call.remote(method, images, call_options).result(timeout_s=timeout)
                return answer
            except lost as err:
                raise InstanceFailed(f"{type(err).__name__}: {str(err).splitlines()[0]}") from None
            finally:
                pages.done()

        try:
            yield RemotePipeline(description, send)
        finally:
            pages.close()
    finally:
        _stop(lambda: serve.delete(name) if options.address else serve.shutdown(), ray.shutdown)


def _stop(*steps: Callable[[], Any]) -> None:
    """Tear Ray down within ``STOP_TIMEOUT_S``. A SIGTERM sent to the whole process group (systemd, a
    terminal's Ctrl-C, ``timeout``) has also stopped the raylet Ray started for us, and then Ray's shutdown
    waits forever: past the deadline this process exits at once (the front-end has drained already)."""
    def run() -> None:
        for step in steps:
            with contextlib.suppress(Exception):
                step()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(STOP_TIMEOUT_S)
    if thread.is_alive():
        log.warning("ray: not stopped within %g s (its own processes were signalled too?): exiting now", STOP_TIMEOUT_S)
        logging.shutdown()
        os._exit(0)
