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
batch gathers meanwhile. Off, each call is its own pipeline call, with no wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any, Callable, Dict, Iterator, List

import numpy as np

from ..device import Device
from .remote import Answer, Call, EngineOptions, InstanceFailed, RemotePipeline, Replica

log = logging.getLogger("hpinfer.serving")
STOP_TIMEOUT_S = 20.0
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def app_name(settings: Any) -> str:
    return "hpinfer-" + "".join(c if c.isalnum() else "-" for c in os.path.basename(settings.pipeline)).strip("-")


def _application(settings: Any, options: EngineOptions) -> Any:
    from ray import serve

    class PipelineReplica:
        def __init__(self, settings: Any):
            import ray

            self.replica = Replica(settings, tag="@" + ray.get_runtime_context().get_node_id()[:8])

        def describe(self) -> Dict[str, Any]:
            return self.replica.describe()

        def call(self, method: str, images: List[np.ndarray], call_options: Dict[str, Any]) -> Any:
            return self.replica.run(method, images, call_options)

        async def batched_call(self, method: str, images: List[np.ndarray], call_options: Dict[str, Any]) -> Any:
            return await self._batch((method, images, call_options))

        @serve.batch(max_batch_size=settings.inference_threads, batch_wait_timeout_s=settings.max_batch_delay_ms / 1000)
        async def _batch(self, calls: List[Call]) -> List[Answer]:
            return await asyncio.to_thread(self.replica.run_many, calls)

        def __del__(self) -> None:
            self.replica.close()

    gpu = Device.parse(settings.device).is_gpu
    most = options.max_instances or options.instances
    scaling: Dict[str, Any] = {"num_replicas": options.instances}
    if most > options.instances:  # queue length per replica decides: each takes inference_threads batches at once
        scaling = {"autoscaling_config": {"min_replicas": options.instances, "max_replicas": most,
                                          "target_ongoing_requests": settings.inference_threads}}
    deployment = serve.deployment(
        PipelineReplica, name="pipeline", max_ongoing_requests=settings.inference_threads,
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
                errors.NodeDiedError)

        call = handle.batched_call if options.batching else handle.call

        def send(method: str, images: List[np.ndarray], call_options: Dict[str, Any]) -> Any:
            try:
                return call.remote(method, images, call_options).result(timeout_s=settings.request_timeout_s)
            except lost as err:
                raise InstanceFailed(f"{type(err).__name__}: {str(err).splitlines()[0]}") from None

        yield RemotePipeline(description, send)
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
