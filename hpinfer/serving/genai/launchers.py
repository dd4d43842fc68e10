"""Start vLLM, SGLang or llama.cpp's own OpenAI-compatible server for a PaddleOCR-VL model directory, on a
loopback port behind ``hpinfer genai-server`` (which then proxies to it, adding its API key, limits and
metrics).

Each launcher builds that project's real command line with PaddleOCR-VL's defaults (PaddleX's genai
configs: vLLM at half the GPU memory, 16k context, 128k batched tokens, no prefix caching; SGLang at half the
memory, 16k context); ``--backend_config`` adds or overrides flags (``{"flag": value}``; ``true``: a bare
flag, ``false``/``null``: dropped). Nothing is downloaded: the model directory must be local, and the
package or binary installed; otherwise the error says which is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import httpx

from ...errors import ConfigError, EngineUnavailableError, HpinferError

log = logging.getLogger("hpinfer.serving")

DEFAULTS: Dict[str, Dict[str, Any]] = {
    "vllm": {"trust-remote-code": True, "gpu-memory-utilization": 0.5, "max-model-len": 16384,
             "max-num-batched-tokens": 131072, "no-enable-prefix-caching": True},
    "sglang": {"trust-remote-code": True, "mem-fraction-static": 0.5, "context-length": 16384},
    "llama.cpp": {"ctx-size": 16384},
}
LAUNCHED = tuple(DEFAULTS)


def flags(values: Mapping[str, Any]) -> List[str]:
    out: List[str] = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        out.append(f"--{name}")
        if value is not True:
            out.append(str(value))
    return out


def build_command(backend: str, model_dir: Optional[str], model_name: str, port: int,
                  backend_config: Optional[Mapping[str, Any]] = None, host: str = "127.0.0.1") -> List[str]:
    """That project's server command line; ConfigError/EngineUnavailableError naming what is missing."""
    if backend not in DEFAULTS:
        raise ConfigError(f"--backend {backend!r}: launchers exist for {', '.join(LAUNCHED)}")
    if not model_dir:
        raise ConfigError(f"--backend {backend} needs --model_dir: a local directory with the model (nothing is downloaded)")
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ConfigError(f"--model_dir {model_dir}: not a directory")
    options = flags({**DEFAULTS[backend], **(backend_config or {})})
    where = ["--host", host, "--port", str(port)]
    if backend == "vllm":
        _need_module("vllm", "pip install vllm (a CUDA build for your GPU)")
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                "--served-model-name", model_name, *where, *options]
    if backend == "sglang":
        _need_module("sglang", "pip install 'sglang[all]'")
        return [sys.executable, "-m", "sglang.launch_server", "--model-path", str(folder),
                "--served-model-name", model_name, *where, *options]
    binary = shutil.which("llama-server")
    if binary is None:
        raise EngineUnavailableError("--backend llama.cpp: llama-server is not on PATH (build llama.cpp, or put its bin/ on PATH)")
    ggufs = sorted(folder.glob("*.gguf"))
    projectors = [p for p in ggufs if "mmproj" in p.name.lower()]
    models = [p for p in ggufs if p not in projectors]
    if not models or not projectors:
        raise ConfigError(f"--model_dir {model_dir}: llama.cpp needs the model's .gguf and its mmproj*.gguf "
                          f"(found: {', '.join(p.name for p in ggufs) or 'no .gguf file'})")
    return [binary, "--model", str(models[0]), "--mmproj", str(projectors[0]), "--alias", model_name, *where, *options]


def _need_module(name: str, how: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise EngineUnavailableError(f"the {name} package is not installed in this Python ({sys.executable}): {how}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LaunchedServer:
    """The child server process: started in its own process group, ready once ``GET /v1/models`` answers."""

    def __init__(self, command: List[str], port: int):
        self.command, self.port = command, port
        self.url = f"http://127.0.0.1:{port}/v1"
        log.info("starting: %s", " ".join(command))
        self.process = subprocess.Popen(command, start_new_session=True)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise HpinferError(f"{Path(self.command[0]).name} exited with code {code} before it was ready (its output is above)")
            try:
                if httpx.get(f"{self.url}/models", timeout=5, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise HpinferError(f"the launched server did not answer GET {self.url}/models within {timeout_s:g} s")
            time.sleep(1)

    def stop(self, grace_s: float = 30) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
