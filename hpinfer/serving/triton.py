"""``hpinfer serve --engine triton``: the pipeline bound into NVIDIA Triton through PyTriton, behind basic
serving's HTTP front-end (PaddleX's high-stability serving, without its Paddle models).

Triton serves one model per pipeline: an instance group of ``--instances`` (each instance a warmed-up
pipeline, ``remote.Replica``; Triton's python backend runs a stub process per instance and restarts one
that dies), a dynamic batcher and Triton's own HTTP, gRPC and metrics ports (``--triton_ports``). The
front-end sends each batch its batcher forms over gRPC on loopback, one request per batch.

The dynamic batcher: with instance batching on (``remote.batching_on``) it waits up to
``--max_batch_delay_ms`` for the requests of ``--inference_threads`` front-end threads (preferred batch:
all their pages), whose pages then share one pipeline call; off, there is none (Triton's default
scheduler: each request to a free instance; Triton counted ~0.7 ms queued a request with one), as the
front-end has batched already.

Calls: PyTriton runs the instances' infer functions in this process (its stub processes relay each request
to it), so a call's pages and its answer need not travel: the front-end leaves the call in ``_Calls`` and the
request carries only its number, one row per page (so that the dynamic batcher counts pages); the infer
function takes the calls of the requests Triton hands it and leaves their answers there (measured faster
than pixels through a shared-memory region and a pickled answer: benchmarks/RESULTS.md, 2026-12-05 05:00).
Triton's own ports therefore take calls from this front-end only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .remote import Answer, Call, EngineOptions, InstanceFailed, RemotePipeline, Replica

log = logging.getLogger("hpinfer.serving")
RESTART_ATTEMPTS = 3
READY_TIMEOUT_S = 60.0
RESTART_COOLDOWN_S = 5.0  # calls that failed before a restart finished don't start another
MODEL = "hpinfer"
NO_TENSOR_STORE = "PYTRITON_NO_TENSORSTORE"
INSTALL_HINT = ("make a venv with Debian's /usr/bin/python3.11 (apt-get install python3.11-venv) and install "
                "hpinfer there with scripts/install.sh --triton")


def check_environment() -> None:
    """PyTriton 0.7's limits, said before Triton starts (its own failures are a crashed stub process)."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise ConfigError(f"--engine triton needs PyTriton: {INSTALL_HINT}") from None
    if int(np.__version__.split(".")[0]) >= 2:
        raise ConfigError(f"PyTriton 0.7 needs numpy < 2 (this environment has {np.__version__}): {INSTALL_HINT}")
    # Triton's stub processes are linked to the system's libpython, and run this venv's Python code with it:
    # under another build of the same version (pyenv's 3.11.7 on Debian's 3.11.2) they fail at start.
    if os.path.realpath(sys.base_prefix) != "/usr":
        raise ConfigError(f"PyTriton's stub processes run with the system's libpython, not {sys.base_prefix}'s Python: "
                          + INSTALL_HINT)


class _Calls:
    """Calls waiting for an instance, by number: the front-end puts one in, an infer function answers it."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._waiting: Dict[int, List[Any]] = {}  # number -> [call, answer]

    def put(self, call: Call) -> int:
        number = next(self._numbers)
        self._waiting[number] = [call, None]
        return number

    def get(self, number: int) -> Optional[List[Any]]:
        """The call's slot; None once its front-end thread stopped waiting (it timed out)."""
        return self._waiting.get(number)

    def pop(self, number: int) -> Optional[Answer]:
        return self._waiting.pop(number)[1]


def _infer_function(replica: Replica, calls: _Calls) -> Callable[[List[Any]], List[Dict[str, np.ndarray]]]:
    """One instance's infer function: the requests Triton batched together, one front-end call each."""

    def infer(requests: List[Any]) -> List[Dict[str, np.ndarray]]:
        slots = [slot for slot in (calls.get(int(request["call"][0][0])) for request in requests) if slot is not None]
        for slot, answer in zip(slots, replica.run_many([slot[0] for slot in slots]) if slots else ()):
            slot[1] = answer
        return [{"done": np.ones((len(request["call"]), 1), np.uint8)} for request in requests]

    return infer


def _client_send(server: "_Triton", timeout_s: float, calls: _Calls) -> Callable[[str, List[np.ndarray], Dict[str, Any]], Answer]:
    """The front-end's side: a batch of pages → one Triton request (a gRPC client per batcher thread). An
    instance's stub process found dead gets Triton restarted."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    local = threading.local()

    def send(method: str, images: List[np.ndarray], options: Dict[str, Any]) -> Answer:
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(
                f"127.0.0.1:{server.ports[1]}",
                # Reconnect at once after a Triton restart (gRPC's default backoff grows to minutes).
                channel_args=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                              ("grpc.max_reconnect_backoff_ms", 1000)])
        number = calls.put((method, images, options))
        try:
            tensor = grpcclient.InferInput("call", [len(images), 1], "INT64")
            tensor.set_data_from_numpy(np.full((len(images), 1), number, np.int64))
            local.client.infer(MODEL, [tensor], client_timeout=timeout_s)
        except InferenceServerException as err:
            if err.status() == "StatusCode.INTERNAL":  # a dead stub, or PyTriton's channel broken with it
                server.repair()
            raise InstanceFailed(str(err)) from None
        finally:
            answer = calls.pop(number)
        if answer is None:  # not expected: Triton answered without running the call
            raise InstanceFailed("Triton answered the call without an instance's answer")
        return answer

    return send


def _free(ports: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """0 → a free port (Triton itself takes no 0); kept across restarts, so clients find it again."""
    sockets = []
    for port in ports:
        if port == 0:
            sockets.append(socket.socket())
            sockets[-1].bind(("127.0.0.1", 0))
    free = iter([s.getsockname()[1] for s in sockets])
    for s in sockets:
        s.close()
    return tuple(port or next(free) for port in ports)  # type: ignore[return-value]


class _Triton:
    """Triton with the model bound to the instances' infer functions; ``repair`` restarts it.

    Triton's python backend doesn't restart an instance's stub process that died (a crash, the OOM killer),
    and when it is the first instance's, PyTriton's data channel (which that stub holds) dies with it: every
    request fails (measured). So the
    repair is a Triton restart, in the background, one at a time: a few seconds, and the pipelines stay
    loaded and warm in this process; requests meanwhile are retried, then answered 503 + Retry-After."""

    def __init__(self, replicas: List[Replica], settings: Any, ports: Tuple[int, int, int], batching: bool):
        self.replicas, self.settings, self.ports, self.batching = replicas, settings, _free(ports), batching
        self.calls = _Calls()
        self._busy = threading.Lock()
        self._restarted_at = 0.0
        self._wanted = threading.Event()
        self._start()
        # PyTriton starts tritonserver with PR_SET_PDEATHSIG, which fires when the starting *thread* ends: so
        # restarts run in this thread, which lives as long as the server.
        threading.Thread(target=self._repairs, name="hpinfer-triton-repair", daemon=True).start()

    def _start(self) -> None:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig

        settings = self.settings
        http_port, grpc_port, metrics_port = self.ports
        # The tensors are a few bytes (``_Calls``): inside PyTriton's messages, not through its shared-memory block
        # store, a process that each request and answer would ask for blocks (read by the stub processes too).
        os.environ[NO_TENSOR_STORE] = "1"
        # The front-end drains before Triton stops, so Triton has nothing left to wait for by then.
        self.triton = Triton(config=TritonConfig(
            http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, exit_timeout_secs=5))
        if self.batching:  # the pages of every front-end thread's request, waited for up to the batching delay
            most = settings.max_batch_size * settings.inference_threads
            batcher = DynamicBatcher(max_queue_delay_microseconds=int(settings.max_batch_delay_ms * 1000),
                                     preferred_batch_size=[most])
        else:  # no dynamic batcher: Triton's default scheduler hands each request to a free instance, unqueued
            most, batcher = settings.max_batch_size, None
        self.triton.bind(
            MODEL, infer_func=[_infer_function(replica, self.calls) for replica in self.replicas],
            inputs=[Tensor(name="call", dtype=np.int64, shape=(1,))], outputs=[Tensor(name="done", dtype=np.uint8, shape=(1,))],
            config=ModelConfig(max_batch_size=most, batcher=batcher),
        )
        self.triton.run()
        self._wait_ready(http_port)
        log.info("triton: model %s with %d instance(s); Triton's HTTP :%d, gRPC :%d, metrics :%d",
                 MODEL, len(self.replicas), http_port, grpc_port, metrics_port)

    @staticmethod
    def _wait_ready(http_port: int) -> None:
        """PyTriton's run() can return before Triton has loaded the model (seen on a restart)."""
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_S
        while httpx.get(f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/ready", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Triton did not load model {MODEL} within {READY_TIMEOUT_S:g} s")
            time.sleep(0.1)

    def repair(self) -> None:
        if time.monotonic() - self._restarted_at > RESTART_COOLDOWN_S:
            self._wanted.set()

    def _repairs(self) -> None:
        while True:
            self._wanted.wait()
            with self._busy:
                if self._wanted.is_set():
                    self._restart()
                    self._wanted.clear()

    def _restart(self) -> None:
        try:
            for attempt in range(1, RESTART_ATTEMPTS + 1):
                start = time.perf_counter()
                log.warning("triton: an instance failed: restarting Triton (attempt %d of %d)", attempt, RESTART_ATTEMPTS)
                try:
                    self.triton.stop()
                    self._start()
                    log.warning("triton: restarted (%.1f s)", time.perf_counter() - start)
                    return
                except Exception:  # noqa: BLE001 - e.g. PyTriton's 1 s handshake between stubs timed out (a busy machine)
                    log.exception("triton: restart failed")
        finally:
            self._restarted_at = time.monotonic()

    def stop(self) -> None:
        with self._busy:  # not in the middle of a restart, and none after
            self._wanted.clear()
            self._restarted_at = float("inf")
            self.triton.stop()


@contextlib.contextmanager
def started(settings: Any, options: EngineOptions) -> Iterator[RemotePipeline]:
    """Triton running with every instance warm, as the stand-in pipeline the front-end drives."""
    check_environment()
    replicas = [Replica(settings, tag=f"/{i}") for i in range(options.instances)]
    try:
        server = _Triton(replicas, settings, options.triton_ports, bool(options.batching))
        try:
            yield RemotePipeline(replicas[0].describe(), _client_send(server, settings.request_timeout_s, server.calls))
        finally:
            server.stop()
    finally:
        for replica in replicas:
            replica.close()
