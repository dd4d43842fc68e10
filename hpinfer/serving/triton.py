"""``hpinfer serve --engine triton``: the pipeline bound into NVIDIA Triton through PyTriton, behind basic
serving's HTTP front-end (PaddleX's high-stability serving, without its Paddle models).

Triton serves one model per pipeline: an instance group of ``--instances`` (each instance a warmed-up
pipeline, ``remote.Replica``; Triton's python backend runs a stub process per instance and restarts one
that dies), a dynamic batcher (``--max_batch_size`` pages, ``--max_batch_delay_ms`` queue delay, preferred
batch size the full batch) and Triton's own HTTP, gRPC and metrics ports (``--triton_ports``). The
front-end sends each batch its batcher forms over gRPC on loopback.

Tensors: pages go as raw pixels, one row per page, padded to the longest (``uint8`` only: PyTriton 0.7
mangles BYTES tensors and needs numpy < 2, see ``check_environment``); results come back pickled the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from .remote import Answer, EngineOptions, InstanceFailed, RemotePipeline, Replica

log = logging.getLogger("hpinfer.serving")
RESTART_ATTEMPTS = 3
READY_TIMEOUT_S = 60.0
RESTART_COOLDOWN_S = 5.0  # calls that failed before a restart finished don't start another
MODEL = "hpinfer"
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


def pack(rows: Sequence[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    """Byte strings → (a uint8 matrix, one zero-padded row each; their lengths)."""
    lengths = np.array([[len(row)] for row in rows], np.int64)
    matrix = np.zeros((len(rows), max(1, int(lengths.max()))), np.uint8)
    for i, row in enumerate(rows):
        matrix[i, :len(row)] = np.frombuffer(row, np.uint8)
    return matrix, lengths


def unpack(matrix: np.ndarray, lengths: np.ndarray) -> List[bytes]:
    return [matrix[i, :int(lengths[i][0])].tobytes() for i in range(len(matrix))]


def _infer_function(replica: Replica) -> Callable[[List[Any]], List[Dict[str, np.ndarray]]]:
    """One instance's infer function: the pages of every request Triton batched together, grouped by call
    (method and options: requests with different options never share a pipeline call, as in the batcher)."""

    def infer(requests: List[Any]) -> List[Dict[str, np.ndarray]]:
        groups: Dict[bytes, List[Tuple[int, int, np.ndarray]]] = defaultdict(list)
        for r, request in enumerate(requests):
            calls = unpack(request["call"], request["call_length"])
            for p, (pixels, shape, call) in enumerate(zip(request["image"], request["shape"], calls)):
                image = pixels[:int(np.prod(shape))].reshape(tuple(int(s) for s in shape if s))
                groups[call].append((r, p, image))
        answers: List[List[bytes]] = [[b""] * len(request["shape"]) for request in requests]
        for call, pages in groups.items():
            method, options = json.loads(call)
            name, (status, value) = replica.run(method, [image for _, _, image in pages], options)
            for i, (r, p, _) in enumerate(pages):
                answers[r][p] = pickle.dumps((name, (status, [value[i]] if status == "ok" else value)), protocol=5)
        outputs = []
        for rows in answers:
            matrix, lengths = pack(rows)
            outputs.append({"result": matrix, "result_length": lengths})
        return outputs

    return infer


def _client_send(grpc_port: int, timeout_s: float, repair: Callable[[], None]) -> Callable[[str, List[np.ndarray], Dict[str, Any]], Answer]:
    """The front-end's side: a batch of pages → one Triton request (a gRPC client per batcher thread).
    ``repair`` is called when an instance's stub process is found dead."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    local = threading.local()

    def send(method: str, images: List[np.ndarray], options: Dict[str, Any]) -> Answer:
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(
                f"127.0.0.1:{grpc_port}",
                # Reconnect at once after a Triton restart (gRPC's default backoff grows to minutes).
                channel_args=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                              ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                              ("grpc.max_reconnect_backoff_ms", 1000)])
        pixels, _ = pack([np.ascontiguousarray(image).tobytes() for image in images])
        shapes = np.array([image.shape + (0,) * (3 - image.ndim) for image in images], np.int64)
        calls, call_lengths = pack([json.dumps([method, options], sort_keys=True).encode()] * len(images))
        inputs = []
        for name, array in (("image", pixels), ("shape", shapes), ("call", calls), ("call_length", call_lengths)):
            tensor = grpcclient.InferInput(name, list(array.shape), "UINT8" if array.dtype == np.uint8 else "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = local.client.infer(MODEL, inputs, client_timeout=timeout_s)
        except InferenceServerException as err:
            if err.status() == "StatusCode.INTERNAL":  # a dead stub, or PyTriton's channel broken with it
                repair()
            raise InstanceFailed(str(err)) from None
        pages = [pickle.loads(row) for row in unpack(result.as_numpy("result"), result.as_numpy("result_length"))]
        failed = next((answer for _, answer in pages if answer[0] == "error"), None)
        return pages[0][0], failed or ("ok", [answer[1][0] for _, answer in pages])

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

    def __init__(self, replicas: List[Replica], settings: Any, ports: Tuple[int, int, int]):
        self.replicas, self.settings, self.ports = replicas, settings, _free(ports)
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
        # The front-end drains before Triton stops, so Triton has nothing left to wait for by then.
        self.triton = Triton(config=TritonConfig(
            http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, exit_timeout_secs=5))
        self.triton.bind(
            MODEL, infer_func=[_infer_function(replica) for replica in self.replicas],
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1,)), Tensor(name="shape", dtype=np.int64, shape=(3,)),
                    Tensor(name="call", dtype=np.uint8, shape=(-1,)), Tensor(name="call_length", dtype=np.int64, shape=(1,))],
            outputs=[Tensor(name="result", dtype=np.uint8, shape=(-1,)), Tensor(name="result_length", dtype=np.int64, shape=(1,))],
            config=ModelConfig(max_batch_size=settings.max_batch_size, batcher=DynamicBatcher(
                max_queue_delay_microseconds=int(settings.max_batch_delay_ms * 1000),
                preferred_batch_size=[settings.max_batch_size])),
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
        server = _Triton(replicas, settings, options.triton_ports)
        try:
            send = _client_send(server.ports[1], settings.request_timeout_s, server.repair)
            yield RemotePipeline(replicas[0].describe(), send)
        finally:
            server.stop()
    finally:
        for replica in replicas:
            replica.close()
