"""``hpinfer genai-server``: the OpenAI-compatible block recogniser PaddleOCR-VL pipelines call (port 8118).

``--backend native`` answers with hpinfer's OCR models; ``proxy`` forwards to ``--upstream_url``; ``vllm``,
``sglang`` and ``llama.cpp`` start that project's server for ``--model_dir`` on a loopback port and proxy to
it. Heavy imports wait until ``run``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import ConfigError

BACKENDS = ("native", "proxy", "vllm", "sglang", "llama.cpp")
DEFAULT_PORT = 8118  # PaddleX's genai_server
DEFAULT_MODEL_NAME = "PaddleOCR-VL-0.9B"


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "genai-server", parents=[common], help="serve block recognition over an OpenAI-compatible API (PaddleOCR-VL's recogniser tier)",
        epilog="The API key may also come from $HPINFER_API_KEY.",
    )
    p.add_argument("--backend", choices=BACKENDS, default="native",
                   help="native: hpinfer's OCR models; proxy: --upstream_url; vllm/sglang/llama.cpp: start that server for --model_dir")
    p.add_argument("--model_name", default=DEFAULT_MODEL_NAME, help="the name GET /v1/models lists and requests must send (default %(default)s)")
    p.add_argument("--model_dir", default=None, help="vllm/sglang/llama.cpp: the local model directory")
    p.add_argument("--backend_config", default=None, help='vllm/sglang/llama.cpp: more server flags as JSON, e.g. \'{"max-num-seqs": 128}\'')
    p.add_argument("--upstream_url", default=None, help="proxy: the OpenAI-compatible base URL, e.g. http://10.0.0.5:8118/v1")
    p.add_argument("--upstream_api_key", default=None, help="proxy: the key the upstream wants")
    p.add_argument("--startup_timeout_s", type=float, default=900.0, help="how long a launched server may take to answer")
    p.add_argument("--pipeline", default="PaddleOCR-VL", help="native: the pipeline YAML whose OCR SubModules recognise")
    p.add_argument("--device", default=None, help="native: cpu (default) or gpu:N")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s; 0 picks a free port")
    p.add_argument("--max_batch_size", type=int, default=16, help="native: blocks per engine call (default %(default)s)")
    p.add_argument("--max_batch_delay_ms", type=float, default=10.0)
    p.add_argument("--inference_threads", type=int, default=None, help="native: batches in flight (default: per device)")
    p.add_argument("--max_queue", type=int, default=512,
                   help="requests in flight before 503 (default %(default)s: above PaddleX's 200 per client)")
    p.add_argument("--request_timeout_s", type=float, default=600.0)
    p.add_argument("--max_body_mb", type=float, default=50.0)
    p.add_argument("--max_pixels", type=int, default=40_000_000, help="pixels per block image")
    p.add_argument("--allow_private_urls", action="store_true", help="let http(s) image URLs reach private and loopback addresses")
    p.add_argument("--api_key", default=os.environ.get("HPINFER_API_KEY"), help="require 'Authorization: Bearer <key>'")


def build_app(args: argparse.Namespace):
    """The app and what to stop after it (a launched server), from the parsed arguments."""
    from ..config import parse_json_object
    from ..serving.genai.app import create_genai_app
    from ..serving.genai.backends import NativeBackend, ProxyBackend
    from ..serving.settings import ServeSettings

    if args.model_dir and args.backend in ("native", "proxy"):
        raise ConfigError(f"--model_dir is for --backend vllm, sglang or llama.cpp (the {args.backend} backend loads no model directory)")
    if args.upstream_url and args.backend != "proxy":
        raise ConfigError("--upstream_url is for --backend proxy")
    settings = ServeSettings(
        pipeline=args.pipeline, device=args.device, max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms, inference_threads=args.inference_threads, max_queue=args.max_queue,
        request_timeout_s=args.request_timeout_s, max_body_mb=args.max_body_mb, max_pixels=args.max_pixels,
        allow_private_urls=args.allow_private_urls, api_key=args.api_key,
    )
    if args.backend == "native":
        from ..pipelines.block_recognition import NativeRecogniser

        return create_genai_app(settings, args.model_name, NativeBackend(settings, NativeRecogniser(args.pipeline, args.device)))
    if args.backend == "proxy":
        if not args.upstream_url:
            raise ConfigError("--backend proxy needs --upstream_url (the OpenAI-compatible base URL, ending in /v1)")
        return create_genai_app(settings, args.model_name, ProxyBackend(args.upstream_url, args.upstream_api_key, args.request_timeout_s))
    from ..serving.genai.launchers import LaunchedServer, build_command, free_port

    config = parse_json_object(args.backend_config, "--backend_config") if args.backend_config else None
    port = free_port()
    server = LaunchedServer(build_command(args.backend, args.model_dir, args.model_name, port, config), port)
    try:
        server.wait_ready(args.startup_timeout_s)
    except BaseException:
        server.stop()
        raise
    backend = ProxyBackend(server.url, None, args.request_timeout_s)
    return create_genai_app(settings, args.model_name, backend, on_stop=server.stop)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app = build_app(args)
    recogniser = getattr(app.state.service.backend, "recogniser", None)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    finally:
        if recogniser is not None:
            recogniser.close()
    return 0
