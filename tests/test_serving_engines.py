"""``hpinfer serve --engine triton|ray``: real servers on 127.0.0.1 give basic serving's answers on every
endpoint (requests, responses and errors alike: the pipeline's endpoint, health, OpenAPI, the jobs API; for
OCR, layout_parsing, table_recognition and seal_recognition), survive one instance being killed under load
(instance batching on: the answers stay right and instances combine calls), drain on SIGTERM; Ray runs
replicas on two nodes of a real cluster (head and a second node on this machine) and both serve.

Triton needs PyTriton, which needs numpy < 2 and Debian's Python: these tests run the servers with
``.venv-triton/bin/python`` (scripts/install.sh --test makes it) unless this interpreter can run PyTriton.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import httpx
import pytest

from test_serving_support import b64, make_pdf

ROOT = Path(__file__).resolve().parents[1]
TRITON_VENV_PYTHON = ROOT / ".venv-triton" / "bin" / "python"


def _triton_python() -> str:
    probe = "import pytriton, numpy; assert int(numpy.__version__.split('.')[0]) < 2"
    for python in (sys.executable, str(TRITON_VENV_PYTHON)):
        if Path(python).exists() and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
            return python
    message = "no interpreter that runs PyTriton: scripts/install.sh --test makes .venv-triton"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Server:
    """``python -m hpinfer.serving serve`` on 127.0.0.1:<free port>, ready (warm) when entered."""

    def __init__(self, python: str, *args: str, port: int = 0, pipeline: str = "OCR"):
        self.process = subprocess.Popen(
            [python, "-m", "hpinfer.serving", "serve", "--pipeline", pipeline, "--host", "127.0.0.1", "--port", str(port), *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT, start_new_session=True,
        )
        self.log: List[str] = []
        self._started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            if "Uvicorn running on" in line:
                self._started.set()

    def text(self) -> str:
        return "".join(self.log)

    def __enter__(self) -> "Server":
        try:
            return self._wait()
        except BaseException:
            self.__exit__()
            raise

    def _wait(self) -> "Server":
        deadline = time.monotonic() + 240
        while not self._started.wait(0.2):  # a server that exits (fails to start) fails the test at once
            assert time.monotonic() < deadline and self.process.poll() is None, self.text()[-5000:]
        self.url = re.search(r"Uvicorn running on (http://\S+)", self.text()).group(1)
        deadline = time.monotonic() + 120
        while not self.ready():
            assert time.monotonic() < deadline and self.process.poll() is None, self.text()[-5000:]
            time.sleep(0.1)
        return self

    def ready(self) -> bool:
        try:  # worker processes (--instances) listen a moment after the supervisor says it runs
            return httpx.get(f"{self.url}/health/ready").status_code == 200
        except httpx.ConnectError:
            return False

    def __exit__(self, *exc: Any) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        for region in Path("/dev/shm").glob(f"pytrtion{self.process.pid}-*"):  # Triton's, which a SIGKILL leaves behind
            region.unlink(missing_ok=True)

    def instance_calls(self) -> Dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        return {name: float(n) for name, n in re.findall(r'^hpinfer_instance_calls_total\{instance="([^"]+)"\} (\S+)$', text, re.M)}

    def batch_sizes(self, name: str = "hpinfer_instance_batch_size") -> Dict[str, float]:
        """A batch size histogram's count and sum, from /metrics."""
        text = httpx.get(f"{self.url}/metrics").text
        return {key: float(re.search(rf"^{name}_{key} (\S+)$", text, re.M).group(1)) for key in ("count", "sum")}


COMMON = [("GET", "/health", None), ("GET", "/health/ready", None), ("GET", "/openapi.json", None),
          ("GET", "/nowhere", None), ("GET", "/metrics", None)]
JOB = "JOB"  # a case whose body is sent to POST /jobs and followed through every jobs route (``_job``)


def _cases(images: Path, tmp_path: Path) -> List[tuple]:
    """(method, path, json body) for every route and the errors basic serving gives."""
    png = b64((images / "bilevel_test.png").read_bytes())
    pdf = b64(make_pdf([images / "single_line.jpg", images / "bilevel_test.png"], tmp_path / "two.pdf").read_bytes())
    return [
        *COMMON,
        ("POST", "/ocr", {"file": png}),  # with the result pictures
        ("POST", "/ocr", {"file": b64((images / "ja_lines.jpg").read_bytes()), "visualize": False, "textDetThresh": 0.4}),
        ("POST", "/ocr", {"file": pdf, "fileType": 0, "visualize": False}),
        ("POST", "/ocr", {"file": pdf, "fileType": 1}),
        ("POST", "/ocr", {"file": "not base64!"}),
        ("POST", "/ocr", {"file": png, "color": "red"}),
        ("POST", "/ocr", {"file": png, "useDocUnwarping": True}),
        ("POST", "/ocr", {"file": png, "useDocOrientationClassify": True}),
        ("POST", "/ocr", {"file": b64(b"%PDF-1.4 broken")}),
        ("POST", "/ocr", None),
        ("GET", "/ocr", None),
        (JOB, "/jobs", {"file": pdf, "fileType": 0, "priority": "interactive"}),
        ("POST", "/jobs", {"file": png, "useDocUnwarping": True}), ("POST", "/jobs", {"file": "not base64!"}),
        ("GET", "/jobs/0123456789abcdef", None), ("DELETE", "/jobs/0123456789abcdef", None),
    ]


def _document_cases(pipeline: str, images: Path) -> List[tuple]:
    """The same for the document pipelines' endpoints: a page with the result pictures, then their errors."""
    png = lambda image: b64(cv2.imencode(".png", image)[1].tobytes())  # noqa: E731
    if pipeline == "layout_parsing":
        page = cv2.imread(str(images / "doc_page_zh_en.jpg"))
        path, body, refused = "/layout-parsing", {"file": png(page[:page.shape[0] // 2]), "fileType": 1}, "useSealRecognition"
    elif pipeline == "table_recognition":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from tables import SAMPLES, render_table

        _, header, rows = SAMPLES[0]
        path, body, refused = "/table-recognition", {"file": png(render_table(rows, header, True))}, "useLayoutDetection"
    else:
        from test_seal import draw_seal

        path, body, refused = "/seal-recognition", {"file": png(draw_seal()), "sealRecScoreThresh": 0.5}, "useLayoutDetection"
    return [
        *COMMON,
        ("POST", path, body),
        ("POST", path, {**body, refused: True}), ("POST", path, {**body, "visualize": "yes please"}),
        ("POST", path, {"file": "not base64!"}), ("POST", path, {"file": body["file"], "fileType": 0}),
        ("POST", path, None), ("GET", path, None),
    ]


def _answers(url: str, cases: List[tuple]) -> List[tuple]:
    answers: List[tuple] = []
    for method, path, body in cases:
        if method == JOB:
            answers += _job(url, body)
            continue
        response = httpx.request(method, url + path, json=body, timeout=180)
        answers.append(_answer(path, response))
    return answers


def _answer(path: str, response: httpx.Response, job_id: str = "") -> tuple:
    """What must be the same on every engine: status, content type, Retry-After and the body, less what
    differs by nature (logIds, job ids, timings; /metrics' values: its metric names must be basic's and more)."""
    kind = response.headers.get("content-type", "")
    text = response.text.replace(job_id, "<job>") if job_id and not kind.startswith("image/") else response.text
    if path == "/metrics":
        content: Any = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    elif "json" in kind:
        content = _normal(json.loads(text))
    elif kind.startswith("text/"):  # the jobs' events: lines, each data line's JSON
        content = [_normal(json.loads(line[6:])) if line.startswith("data: ") else line for line in text.splitlines()]
    else:
        content = response.content
    return path.replace(job_id, "<job>") if job_id else path, response.status_code, kind, response.headers.get("retry-after"), content


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<job>" if k == "jobId" else _normal(v) for k, v in value.items() if k not in ("logId", "timings")}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _job(url: str, body: dict) -> List[tuple]:
    """A job through every jobs route: submitted, followed to its end, read back in every form, deleted."""
    submitted = httpx.post(f"{url}/jobs", json=body, timeout=60)
    job = submitted.json()["result"]["jobId"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/jobs/{job}").json()["result"]["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    routes = [("GET", ""), ("GET", "/result"), ("GET", "/result?format=markdown"), ("GET", "/pages/0"),
              ("GET", "/pages/1/image"), ("GET", "/pages/9"), ("GET", "/events"), ("DELETE", ""), ("GET", "")]
    return [_answer("/jobs", submitted)] + [
        _answer(f"/jobs/{job}{route}", httpx.request(method, f"{url}/jobs/{job}{route}", timeout=60), job)
        for method, route in routes]


def _assert_same(basic: List[tuple], other: List[tuple]) -> None:
    for expected, got in zip(basic, other):
        if expected[0] == "/metrics":
            assert expected[1:4] == got[1:4] and expected[4] <= got[4], (expected, got)
            continue
        assert got == expected, f"{expected[0]}: {str(got)[:300]} != {str(expected)[:300]}"
    assert len(basic) == len(other)


def _load(url: str, body: dict, seconds: float, workers: int = 6) -> List[httpx.Response]:
    """Requests from ``workers`` clients until ``seconds`` have passed; every answer."""
    deadline = time.monotonic() + seconds

    def client() -> List[httpx.Response]:
        out = []
        while time.monotonic() < deadline:
            out.append(httpx.post(f"{url}/ocr", json=body, timeout=60))
        return out

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return [r for rs in pool.map(lambda _: client(), range(workers)) for r in rs]


def _assert_none_lost(responses: List[httpx.Response], expected: dict) -> None:
    """200 with the right answer, or a 503 that says when to retry: nothing else, and nothing hung (timeout 60 s)."""
    assert responses
    for r in responses:
        assert r.status_code == 200 or (r.status_code == 503 and r.headers.get("retry-after")), r.text[:300]
        if r.status_code == 200:
            assert _normal(r.json()) == expected


def _expected(url: str, body: dict) -> dict:
    return _normal(httpx.post(f"{url}/ocr", json=body, timeout=60).json())


def _assert_combined(server: Server) -> None:
    """With the front-end's batches of one page (--max_batch_size 1), instances made pipeline calls of more:
    calls of several front-end threads combined (instance batching on)."""
    front, instances = server.batch_sizes("hpinfer_batch_size"), server.batch_sizes()
    assert front["sum"] == front["count"] and instances["sum"] > instances["count"], (front, instances)


def _sigterm_drains(server: Server, body: dict) -> None:
    """A request in flight at SIGTERM completes; the process then exits by itself."""
    answers: list = []
    slow = threading.Thread(target=lambda: answers.append(httpx.post(f"{server.url}/ocr", json=body, timeout=120)))
    slow.start()
    deadline = time.monotonic() + 30
    while not re.search(r"^hpinfer_requests_in_flight [1-9]", httpx.get(f"{server.url}/metrics").text, re.M):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.process.send_signal(signal.SIGTERM)
    slow.join(120)
    assert answers and answers[0].status_code == 200, answers
    assert server.process.wait(90) == 0, server.text()[-3000:]
    assert "draining: 1 request(s) in flight" in server.text()


# Instance batching on, with the front-end's batches of one page fed by three threads per instance: instances
# can combine calls (``_assert_combined``); answers must not change.
BATCHED = ("--instance_batching", "on", "--max_batch_size", "1", "--inference_threads", "3")
DOCUMENT_PIPELINES = ("layout_parsing", "table_recognition", "seal_recognition")


def test_triton(shared_images, tmp_path):
    """Same answers as basic serving on every endpoint (both in the Triton interpreter); under load with
    instance batching on, right answers from combined calls; a killed instance is routed around and Triton
    restarted; SIGTERM drains."""
    python = _triton_python()
    cases = _cases(shared_images, tmp_path)
    body = {"file": b64((shared_images / "bilevel_test.png").read_bytes()), "visualize": False}
    with Server(python, "--jobs_dir", str(tmp_path / "basic")) as basic:
        expected = _answers(basic.url, cases)
        answer = _expected(basic.url, body)
    with Server(python, "--engine", "triton", "--instances", "2", "--triton_ports", "0,0,0", *BATCHED,
                "--jobs_dir", str(tmp_path / "triton")) as triton:
        _assert_same(expected, _answers(triton.url, cases))
        http_port = re.search(r"Triton's HTTP :(\d+)", triton.text()).group(1)
        config = httpx.get(f"http://127.0.0.1:{http_port}/v2/models/hpinfer/config").json()
        assert config["instance_group"][0]["count"] == 2 and config["max_batch_size"] == 3
        assert config["dynamic_batching"]["preferred_batch_size"] == [3]
        _assert_none_lost(_load(triton.url, body, seconds=3), answer)
        _assert_combined(triton)

        stubs = _stub_pids(triton.process.pid)
        assert len(stubs) == 2
        killer = threading.Timer(1.0, os.kill, (stubs[0], signal.SIGKILL))
        killer.start()
        _assert_none_lost(_load(triton.url, body, seconds=6), answer)
        deadline = time.monotonic() + 60
        while "triton: restarted" not in triton.text():
            assert time.monotonic() < deadline, triton.text()[-3000:]
            time.sleep(0.2)
        while len(_stub_pids(triton.process.pid)) != 2:
            assert time.monotonic() < deadline, triton.text()[-3000:]
            time.sleep(0.2)
        before = triton.instance_calls()
        _assert_none_lost(_load(triton.url, body, seconds=3), answer)
        after = triton.instance_calls()
        assert all(after[name] > before.get(name, 0) for name in after), (before, after)  # both instances serve again
        _sigterm_drains(triton, body)


@pytest.mark.parametrize("pipeline", DOCUMENT_PIPELINES)
def test_document_pipelines_on_every_engine(pipeline, shared_images):
    """The document pipelines' endpoints answer alike on basic, Triton and Ray (one instance each, instance
    batching off: the default on a CPU; Triton in its interpreter, started together)."""
    cases = _document_cases(pipeline, shared_images)
    engines = ((sys.executable, ()), (_triton_python(), ("--engine", "triton", "--triton_ports", "0,0,0")),
               (sys.executable, ("--engine", "ray")))
    with contextlib.ExitStack() as stack:
        servers = []
        for python, args in engines:
            servers.append(Server(python, *args, pipeline=pipeline))
            stack.callback(servers[-1].__exit__)
        for server in servers:
            server._wait()
        expected = _answers(servers[0].url, cases)
        assert expected[len(COMMON)][1] == 200, expected[len(COMMON)]
        for server in servers[1:]:
            _assert_same(expected, _answers(server.url, cases))
        assert "instance batching off (default on a CPU" in servers[2].text()


def _stub_pids(server_pid: int) -> List[int]:
    """Triton's stub processes (one per instance) of this server: PyTriton names the binding process in their arguments."""
    out = subprocess.run(["pgrep", "-f", f"triton_python_backend_stub .* pytrtion{server_pid}-"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def test_ray_two_nodes(shared_images, tmp_path):
    """A head and a second Ray node on loopback, a replica on each: both serve; answers as basic serving's on
    every endpoint; under load with instance batching on (@serve.batch), right answers from combined calls;
    a killed replica is routed around and comes back; SIGTERM drains."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from hpinfer.serving import ServeSettings, create_app
    from test_serving_support import running

    cases = _cases(shared_images, tmp_path)
    body = {"file": b64((shared_images / "bilevel_test.png").read_bytes()), "visualize": False}
    with running(create_app(ServeSettings(pipeline="OCR", jobs_dir=str(tmp_path / "basic")))) as url:
        expected = _answers(url, cases)
        answer = _expected(url, body)
    loopback = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "include_dashboard": False})
    try:
        cluster.add_node(**loopback)
        assert cluster.address.startswith("127.0.0.1:"), cluster.address
        with Server(sys.executable, "--engine", "ray", "--instances", "2", "--address", cluster.address, *BATCHED,
                    "--jobs_dir", str(tmp_path / "ray")) as ray_server:
            _assert_same(expected, _answers(ray_server.url, cases))
            assert "instance batching on (--instance_batching)" in ray_server.text()
            _assert_none_lost(_load(ray_server.url, body, seconds=3), answer)
            _assert_combined(ray_server)
            served = ray_server.instance_calls()
            nodes = {name.split("@")[1] for name in served}
            assert len(nodes) == 2, served  # a replica on each node, and both answered

            victim = int(next(iter(served)).split("@")[0].split(":")[1])
            threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()
            _assert_none_lost(_load(ray_server.url, body, seconds=6), answer)
            deadline = time.monotonic() + 90
            while not _new_instances(ray_server, served):  # the replica Ray Serve started in place of the victim
                assert time.monotonic() < deadline, ray_server.text()[-3000:]
                _load(ray_server.url, body, seconds=1)
            _sigterm_drains(ray_server, body)
    finally:
        cluster.shutdown()


def _new_instances(server: Server, known: Dict[str, float]) -> Dict[str, float]:
    """Instances that answered and were not among ``known`` (a restarted replica is a new process)."""
    return {name: calls for name, calls in server.instance_calls().items() if name not in known}


def test_basic_instances_share_a_port_and_a_killed_one_comes_back(shared_images):
    """``--instances 2``: two worker processes behind one port; a worker killed under load is replaced.
    Requests in flight in the killed worker end with a dropped connection (a client's retry is safe, OCR
    being idempotent): basic serving can't answer for a dead process, Triton and Ray can (tests above)."""
    body = {"file": b64((shared_images / "bilevel_test.png").read_bytes()), "visualize": False}
    with socket.socket() as probe:  # uvicorn's workers print port 0 as it was given: pick one here
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Server(sys.executable, "--instances", "2", port=port) as server:
        workers = _workers(server.process.pid)
        assert len(workers) == 2, server.text()[-3000:]
        threading.Timer(1.0, os.kill, (workers[0], signal.SIGKILL)).start()
        dropped = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                response = httpx.post(f"{server.url}/ocr", json=body, timeout=60)
                assert response.status_code == 200 or (response.status_code == 503 and response.headers["retry-after"])
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                dropped += 1
        deadline = time.monotonic() + 120
        while len(_workers(server.process.pid)) != 2 or workers[0] in _workers(server.process.pid):
            assert time.monotonic() < deadline, server.text()[-3000:]
            time.sleep(0.2)
        while not server.ready():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert all(httpx.post(f"{server.url}/ocr", json=body, timeout=60).status_code == 200 for _ in range(4))
        assert dropped <= 1  # at most the one request the killed worker held


def _workers(supervisor: int) -> List[int]:
    """uvicorn's worker processes (spawned children of the supervisor, not multiprocessing's resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True).stdout
    workers = []
    for pid in out.split():
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                workers.append(int(pid))
    return workers


def test_instance_batching_is_an_option_of_the_remote_engines():
    from hpinfer.errors import ConfigError
    from hpinfer.serving.remote import EngineOptions

    with pytest.raises(ConfigError, match="--instance_batching is an option of --engine triton and ray"):
        EngineOptions("basic", batching=True)
    assert EngineOptions("ray", batching=False).batching is False


def test_pages_reach_another_process_through_shared_memory(shared_images):
    """Ray's replicas on this machine read the front-end's pages from its memory file (``serving/pages.py``):
    another process gets them bit for bit; a note it cannot follow (another machine: another process under
    that number, or the file gone) reads as None, and the front-end then sends the pixels in the call."""
    import pickle

    import numpy as np

    from hpinfer.serving.pages import KEEP_BYTES, PageWriter, SharedPages, read

    pages = [cv2.imread(str(shared_images / name)) for name in ("bilevel_test.png", "single_line.jpg")]
    reader = ("import pickle, sys; from hpinfer.serving.pages import read; "
              "sys.stdout.buffer.write(pickle.dumps(read(pickle.loads(sys.stdin.buffer.read()))))")
    writer = PageWriter()
    try:
        note = writer.write(pages)
        out = subprocess.run([sys.executable, "-c", reader], input=pickle.dumps(note), capture_output=True, cwd=ROOT, check=True)
        got = pickle.loads(out.stdout)
        assert [page.shape for page in got] == [page.shape for page in pages]
        assert all((a == b).all() for a, b in zip(got, pages))
        assert read(note._replace(pid=os.getppid())) is None
        assert read(SharedPages(note.pid, note.fd, "hpinfer-pages-elsewhere", note.layout)) is None
        writer.done()  # a small batch's file is kept for the thread's next call; a large one's is not
        assert read(note) is not None
        large = writer.write([np.zeros((KEEP_BYTES + 1,), np.uint8)])
        assert read(large) is not None
        writer.done()
        assert read(large) is None
    finally:
        writer.close()
    assert read(note) is None
