"""``hpinfer serve`` and ``hpinfer client``: argument definitions and what they run.

Imported by ``hpinfer.cli`` on every start, so heavy imports (uvicorn, FastAPI, httpx) wait until ``run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..errors import ConfigError
from .settings import LOG_LEVEL_ENV, SETTINGS_ENV, ServeSettings, measured_defaults

COMMANDS = ("serve", "client")
API_KEY_ENV = "HPINFER_API_KEY"
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServeSettings)}  # None: resolved per device and pipeline


def add_commands(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    serve = subparsers.add_parser(
        "serve", parents=[common_parent], help="serve a pipeline over HTTP (PaddleX-compatible API)",
        epilog=f"The API key may also come from ${API_KEY_ENV} (better than the command line, which other users can see).",
    )
    serve.add_argument("--pipeline", required=True, help="bundled pipeline name or a pipeline YAML path")
    serve.add_argument("--device", default=None, help="cpu (default) or gpu:N")
    serve.add_argument("--use_hpip", action="store_true", default=None, help="high-performance inference: pick the best engine")
    serve.add_argument("--hpi_config", default=None, help='JSON, e.g. \'{"backend": "openvino"}\'')
    serve.add_argument("--pipeline_options", default=None,
                       help='pipeline options at creation as JSON, e.g. \'{"use_doc_orientation_classify": true}\'')
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed at start-up)")
    serve.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the models")
    limits = serve.add_argument_group("batching and limits")
    (cpu_batch, cpu_threads), (lp_batch, lp_threads), (gpu_batch, gpu_threads) = (
        measured_defaults("cpu", "OCR"), measured_defaults("cpu", "layout_parsing"), measured_defaults("gpu:0", "OCR"))
    for name, kind, help_text in (
        ("max_batch_size", int, f"images per batched pipeline call (default: {cpu_batch} on a CPU, {lp_batch} there "
                                f"for layout_parsing, {gpu_batch} on a GPU)"),
        ("max_batch_delay_ms", float, "how long an idle batcher waits for requests still being decoded"),
        ("inference_threads", int, f"batches in flight at once (default: {cpu_threads} on a CPU, {lp_threads} there "
                                   f"for layout_parsing, {gpu_threads} on a GPU)"),
        ("max_queue", int, "requests in flight before new ones get 503 + Retry-After"),
        ("request_timeout_s", float, "per request, from admission to response (504 after)"),
        ("drain_timeout_s", float, "on SIGTERM, how long in-flight requests may still take"),
        ("max_body_mb", float, "request body size (413 above)"),
        ("max_pixels", int, "pixels per image or rendered PDF page"),
        ("max_pdf_pages", int, "pages per PDF"),
        ("url_timeout_s", float, "whole download of a URL input"),
        ("max_download_mb", float, "size of a URL input"),
    ):
        default = _DEFAULTS[name]
        shown = "" if default is None else " (default %(default)s)"  # None: the help text says the per-device default
        limits.add_argument(f"--{name}", type=kind, default=default, help=help_text + shown)
    serve.add_argument("--allow_private_urls", action="store_true", help="let URL inputs reach private, loopback and link-local addresses")
    serve.add_argument("--api_key", default=os.environ.get(API_KEY_ENV), help="require 'Authorization: Bearer <key>'")
    serve.add_argument("--cors_origins", default="", help="comma-separated origins allowed by CORS (default: CORS off)")
    serve.add_argument("--no_visualize", action="store_true", help="no result images unless a request sends visualize: true")
    jobs = serve.add_argument_group("async jobs (POST /jobs) and the web page")
    jobs.add_argument("--jobs_dir", default=None, help="folder for jobs and their results; turns the jobs API on (default: off)")
    jobs.add_argument("--jobs_max_pages", type=int, default=_DEFAULTS["jobs_max_pages"], help="pages per job (default %(default)s)")
    jobs.add_argument("--jobs_retention_h", type=float, default=_DEFAULTS["jobs_retention_h"],
                      help="hours finished jobs are kept (default %(default)s)")
    jobs.add_argument("--jobs_per_key", type=int, default=_DEFAULTS["jobs_per_key"],
                      help="unfinished jobs per API key when --api_key is set (default %(default)s)")
    jobs.add_argument("--ui", action="store_true", help="serve the web page at / (turns jobs on; without --jobs_dir "
                                                       "they live in a temporary folder)")

    client = subparsers.add_parser("client", parents=[common_parent], help="send files to an hpinfer (or PaddleX) server")
    client.add_argument("--url", required=True, help="endpoint URL, e.g. http://127.0.0.1:8080/ocr")
    client.add_argument("--input", required=True, nargs="+", help="image or PDF files, or http(s) URLs the server fetches")
    client.add_argument("--save_path", default=None, help="folder for result JSON and images")
    client.add_argument("--api_key", default=os.environ.get(API_KEY_ENV))
    client.add_argument("--params", default=None, help='more request fields as JSON, e.g. \'{"textDetThresh": 0.4}\'')
    client.add_argument("--no_visualize", action="store_true", help="ask for no result images")
    client.add_argument("--timeout", type=float, default=300.0, help="seconds per request")


def run(args: argparse.Namespace) -> int:
    return _serve(args) if args.command == "serve" else _client(args)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    from ..config import parse_json_object

    values = {name: getattr(args, name) for name in ServeSettings.__dataclass_fields__ if hasattr(args, name)}
    values["hpi_config"] = parse_json_object(args.hpi_config, "--hpi_config") if args.hpi_config else None
    values["pipeline_options"] = parse_json_object(args.pipeline_options, "--pipeline_options") if args.pipeline_options else None
    values["cors_origins"] = tuple(o.strip() for o in args.cors_origins.split(",") if o.strip())
    values["visualize"] = not args.no_visualize
    return ServeSettings(**values)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    settings = settings_from_args(args)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1 and (settings.jobs_dir or settings.ui):
        raise ConfigError("--jobs_dir and --ui need --workers 1 (one process runs the jobs)")
    common = dict(host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    if args.workers > 1:  # each worker process builds its own app (and pipeline) from the settings
        create_app(settings)  # fail fast here on a bad pipeline name or YAML
        os.environ.update({SETTINGS_ENV: settings.to_env(), LOG_LEVEL_ENV: args.log_level})
        uvicorn.run("hpinfer.serving.app:app_from_env", factory=True, workers=args.workers, **common)
        return 0
    # One process: load the models before listening, so that loading errors end the command plainly.
    pipeline = settings.load_pipeline()
    try:
        uvicorn.run(create_app(settings, pipeline), **common)
    finally:
        pipeline.close()
    return 0


def _client(args: argparse.Namespace) -> int:
    from ..config import parse_json_object
    from .client import Client, save_response, summary

    params: Dict[str, Any] = parse_json_object(args.params, "--params") if args.params else {}
    if args.no_visualize:
        params["visualize"] = False
    with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
        for source in args.input:
            response = client.predict(source, **params)
            print(summary(source, response))
            if args.save_path:
                stem = Path(source.split("?")[0].rstrip("/")).stem or "result"
                for path in save_response(response, args.save_path, stem):
                    print(f"  saved {path}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m hpinfer.serving serve|client ...``: the same commands without going through ``hpinfer``."""
    import logging

    from ..errors import HpinferError

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser = argparse.ArgumentParser(prog="python -m hpinfer.serving")
    add_commands(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run(args)
    except HpinferError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
