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

Tensors: pages go as raw pixels, one row per page, padded to the longest, written into a shared-memory
region that Triton reads (``_Pages``; ``uint8`` only: PyTriton 0.7 mangles BYTES tensors and needs
numpy < 2, see ``check_environment``); the answer comes back pickled, split over the request's rows.
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
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from .remote import Answer, EngineOptions, InstanceFailed, RemotePipeline, Replica

log = logging.getLogger("hpinfer.serving")
RESTART_ATTEMPTS = 3
READY_TIMEOUT_S = 60.0
RESTART_COOLDOWN_S = 5.0  # calls that failed before a restart finished don't start another
SHM_MIN_BYTES = 4 << 20  # a front-end thread's shared-memory region for pages, grown when a batch needs more
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


def _rows(images: Sequence[np.ndarray]) -> np.ndarray:
    """Pages → a uint8 matrix, one page's pixels per row, zero-padded to the largest (one copy of each)."""
    matrix = np.zeros((len(images), max(image.size for image in images)), np.uint8)
    for row, image in zip(matrix, images):
        row[:image.size] = image.reshape(-1)
    return matrix


def unpack(matrix: np.ndarray, lengths: np.ndarray) -> List[bytes]:
    return [matrix[i, :int(lengths[i][0])].tobytes() for i in range(len(matrix))]


def _infer_function(replica: Replica) -> Callable[[List[Any]], List[Dict[str, np.ndarray]]]:
    """One instance's infer function: the requests Triton batched together, one front-end call each."""

    def infer(requests: List[Any]) -> List[Dict[str, np.ndarray]]:
        calls = []
        for request in requests:
            method, options = json.loads(unpack(request["call"][:1], request["call_length"][:1])[0])
            images = [pixels[:int(np.prod(shape))].reshape(tuple(int(s) for s in shape if s))
                      for pixels, shape in zip(request["image"], request["shape"])]
            calls.append((method, images, options))
        outputs = []
        for request, answer in zip(requests, replica.run_many(calls)):
            data = pickle.dumps(answer, protocol=5)
            rows = len(request["shape"])  # Triton wants a row of output per row of input: the answer split over them
            step = -(-len(data) // rows)
            matrix, lengths = pack([data[i * step:(i + 1) * step] for i in range(rows)])
            outputs.append({"result": matrix, "result_length": lengths})
        return outputs

    return infer


class _Pages:
    """Where the front-end writes a batch's pixels for Triton to read: one system shared-memory region per
    front-end thread (reused, grown when a batch needs more), registered with Triton. In the gRPC request
    itself they cost a copy into and out of the message plus the transfer: measured on loopback with a
    no-op model, 1.36 MB of pixels added 2.3 ms that way, 0.45 ms through shared memory. A batch whose
    region /dev/shm has no room for goes in the request, as before. Registrations die with Triton, so a
    region is replaced after a restart (``_Triton.generation``): its file is removed once Triton has mapped it."""

    def __init__(self, server: "_Triton"):
        self.server = server
        self._local = threading.local()
        self._lock = threading.Lock()
        self._regions: List[Any] = []

    def write(self, client: Any, images: List[np.ndarray]) -> Any:
        """The batch's pixels as the "image" input, in this thread's region if it has room."""
        import tritonclient.grpc as grpcclient

        shape = [len(images), max(image.size for image in images)]
        tensor = grpcclient.InferInput("image", shape, "UINT8")
        region = self._region(client, shape[0] * shape[1])
        if region is None:
            tensor.set_data_from_numpy(_rows(images))
            return tensor
        rows = np.ndarray(shape, np.uint8, buffer=region.map)
        for row, image in zip(rows, images):
            row[:image.size] = image.reshape(-1)  # the padding is never read
        del rows
        tensor.set_shared_memory(region.name, shape[0] * shape[1])
        return tensor

    def _region(self, client: Any, nbytes: int) -> Any:
        region = getattr(self._local, "region", None)
        generation = self.server.generation
        if region is not None and (region.size < nbytes or region.generation != generation):
            with contextlib.suppress(Exception):  # (a restarted Triton never knew it)
                client.unregister_system_shared_memory(region.name, headers=self._headers())
            self._drop(region)
            region = self._local.region = None
        if region is None:
            try:
                region = self._local.region = _Region(max(nbytes, SHM_MIN_BYTES))
            except OSError as err:
                log.info("triton: pages go in the request (no shared memory for %d bytes: %s)", nbytes, err)
                return None
            with self._lock:
                self._regions.append(region)
        if region.generation != generation:
            client.register_system_shared_memory(region.name, region.key, region.size, headers=self._headers())
            region.generation = generation
            region.unlink()  # Triton has it mapped now: no file left behind, whatever ends this process
        return region

    def _headers(self) -> Any:
        """PyTriton's access token for shared-memory (un)registration: asked only when a region changes."""
        token = self.server.triton.get_access_token()
        return {"triton-grpc-protocol-triton-access-token": token} if token else None

    def _drop(self, region: "_Region") -> None:
        with self._lock:
            self._regions.remove(region)
        region.close()

    def close(self) -> None:
        with self._lock:
            regions, self._regions = self._regions, []
        for region in regions:
            region.close()


class _Region:
    """A file in /dev/shm, its space reserved up front (a full tmpfs is an OSError here, not a SIGBUS later)."""

    def __init__(self, size: int):
        import mmap
        import uuid

        self.name, self.size, self.generation = f"hpinfer-{os.getpid()}-{uuid.uuid4().hex[:12]}", size, -1
        self.key = "/" + self.name
        fd = os.open("/dev/shm" + self.key, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            self.map = mmap.mmap(fd, size)
        except OSError:
            os.unlink("/dev/shm" + self.key)
            raise
        finally:
            os.close(fd)

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink("/dev/shm" + self.key)

    def close(self) -> None:
        self.map.close()
        self.unlink()


def _client_send(server: "_Triton", timeout_s: float, pages: _Pages) -> Callable[[str, List[np.ndarray], Dict[str, Any]], Answer]:
    """The front-end's side: a batch of pages → one Triton request (a gRPC client per batcher thread, the
    pixels in its shared-memory region). An instance's stub process found dead gets Triton restarted."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    local = threading.local()

    def send(method: str, images: List[np.ndarray], options: Dict[str, Any]) -> Answer:
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(
                f"127.0.0.1:{server.ports[1]}",
                # Reconnect at once after a Triton restart (gRPC's default backoff grows to minutes).
                channel_args=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                              ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                              ("grpc.max_reconnect_backoff_ms", 1000)])
        shapes = np.array([image.shape + (0,) * (3 - image.ndim) for image in images], np.int64)
        calls, call_lengths = pack([json.dumps([method, options]).encode()] * len(images))
        try:
            inputs = [pages.write(local.client, images)]
            for name, array in (("shape", shapes), ("call", calls), ("call_length", call_lengths)):
                tensor = grpcclient.InferInput(name, list(array.shape), "UINT8" if array.dtype == np.uint8 else "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            result = local.client.infer(MODEL, inputs, client_timeout=timeout_s)
        except InferenceServerException as err:
            if err.status() == "StatusCode.INTERNAL":  # a dead stub, or PyTriton's channel broken with it
                server.repair()
            raise InstanceFailed(str(err)) from None
        return pickle.loads(b"".join(unpack(result.as_numpy("result"), result.as_numpy("result_length"))))

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
        self._busy = threading.Lock()
        self._restarted_at = 0.0
        self._wanted = threading.Event()
        self.generation = 0  # one more at each (re)start: what was registered with the Triton before is gone
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
        if self.batching:  # the pages of every front-end thread's request, waited for up to the batching delay
            most = settings.max_batch_size * settings.inference_threads
            batcher = DynamicBatcher(max_queue_delay_microseconds=int(settings.max_batch_delay_ms * 1000),
                                     preferred_batch_size=[most])
        else:  # no dynamic batcher: Triton's default scheduler hands each request to a free instance, unqueued
            most, batcher = settings.max_batch_size, None
        self.triton.bind(
            MODEL, infer_func=[_infer_function(replica) for replica in self.replicas],
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1,)), Tensor(name="shape", dtype=np.int64, shape=(3,)),
                    Tensor(name="call", dtype=np.uint8, shape=(-1,)), Tensor(name="call_length", dtype=np.int64, shape=(1,))],
            outputs=[Tensor(name="result", dtype=np.uint8, shape=(-1,)), Tensor(name="result_length", dtype=np.int64, shape=(1,))],
            config=ModelConfig(max_batch_size=most, batcher=batcher),
        )
        self.triton.run()
        self._wait_ready(http_port)
        self.generation += 1
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
            pages = _Pages(server)
            try:
                yield RemotePipeline(replicas[0].describe(), _client_send(server, settings.request_timeout_s, pages))
            finally:
                pages.close()
        finally:
            server.stop()
    finally:
        for replica in replicas:
            replica.close()
