"""Helpers for the serving tests (no tests here): a real uvicorn server in a thread on an ephemeral
loopback port, a static file server for URL inputs, and input builders."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import threading
import time
from pathlib import Path
from typing import Iterator, List

import httpx
import uvicorn
from PIL import Image


@contextlib.contextmanager
def running(app, wait_ready: bool = True) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port> until the block ends; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    while wait_ready and httpx.get(f"{url}/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def static_files(folder: Path) -> Iterator[str]:
    """A plain HTTP server for ``folder`` on loopback, for URL inputs."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_pdf(images: List[Path], target: Path) -> Path:
    """A PDF with one page per image; 144 dpi so that the server's 2x rendering gives the image's own size."""
    pages = [Image.open(path).convert("RGB") for path in images]
    pages[0].save(target, save_all=True, append_images=pages[1:], resolution=144.0)
    return target


class ServerProcess:
    """``python -m hpinfer.serving serve ...`` on 127.0.0.1:<free port>, its log collected; ``start`` again after
    ``kill`` for a restart (same arguments, new port)."""

    def __init__(self, *args: str):
        self.args = ["--host", "127.0.0.1", "--port", "0", *args]
        self.log: List[str] = []
        self.process = None
        self.url = ""

    def start(self, timeout: float = 180) -> "ServerProcess":
        import re
        import subprocess
        import sys

        first = len(self.log)
        self.process = subprocess.Popen([sys.executable, "-m", "hpinfer.serving", "serve", *self.args],
                                        stderr=subprocess.PIPE, text=True)
        started = threading.Event()

        def read_log(stream) -> None:
            for line in stream:
                self.log.append(line)
                if "Uvicorn running on" in line:
                    started.set()

        threading.Thread(target=read_log, args=(self.process.stderr,), daemon=True).start()
        deadline = time.monotonic() + timeout
        assert started.wait(timeout), "".join(self.log)
        self.url = re.search(r"Uvicorn running on (http://\S+)", "".join(self.log[first:])).group(1)
        while httpx.get(f"{self.url}/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "server did not become ready:\n" + "".join(self.log)
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        if self.process:
            self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except Exception:  # noqa: BLE001 - then it is killed
                pass
        self.kill()


def wait_for(check, timeout: float, what: str, every: float = 0.05):
    """Polls ``check()`` until it returns something truthy; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(every)
