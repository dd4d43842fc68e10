"""``hpinfer serve`` and ``hpinfer client``: argument definitions and what they run.

Imported by ``hpinfer.cli`` on every start, so heavy imports (uvicorn, FastAPI, httpx) wait until ``run``.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..errors import EXIT_SOME_FAILED, ConfigError, HpinferError
from .remote import ENGINES, EngineOptions
from .settings import BYTES_PER_PIXEL, LOG_LEVEL_ENV, SETTINGS_ENV, SHUTDOWN_GRACE_S, ServeSettings, measured_defaults

COMMANDS = ("serve", "client")
API_KEY_ENV = "HPINFER_API_KEY"
# None: resolved per device and pipeline
_DEFAULTS = {name: f.get_default(call_default_factory=True) for name, f in ServeSettings.model_fields.items()}


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
    serve.add_argument("--workers", type=int, default=None, help="basic engine: the same as --instances")
    engines = serve.add_argument_group("engines and instances (serving/README.md: which engine when)")
    engines.add_argument("--engine", choices=ENGINES, default="basic",
                         help="basic: this process (or --instances worker processes); triton: NVIDIA Triton through "
                              "PyTriton; ray: a Ray Serve application")
    engines.add_argument("--instances", type=int, default=None,
                         help="pipeline copies: basic worker processes, Triton's instance group, or Ray replicas (default 1)")
    engines.add_argument("--max_instances", type=int, default=None, help="ray: autoscale up to this many replicas")
    engines.add_argument("--address", default=None, help="ray: join this cluster (host:port of its head, or auto)")
    engines.add_argument("--triton_ports", default="8000,8001,8002", help="triton: its own HTTP,gRPC,metrics ports (0: a free one, logged)")
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
        ("drain_timeout_s", float, f"on SIGTERM, how long in-flight requests may still take (shutdown then takes at "
                                   f"most {SHUTDOWN_GRACE_S:g} s more; a second signal stops at once)"),
        ("max_body_mb", float, "request body size (413 above)"),
        ("max_pixels", int, "pixels per image or rendered PDF page"),
        ("max_pdf_pages", int, "pages per PDF"),
        ("max_render_side", int, "PDF pages render at 144 dpi, but at most this many pixels on their longer side"),
        ("max_det_side", int, "text detector input's longer side, whatever textDetLimitSideLen asks"),
        ("max_inflight_pixels", int, "memory budget of requests and jobs in flight, in page pixels (rendered page + "
                                     f"detector input; bodies and decoded files at {BYTES_PER_PIXEL} bytes a pixel); more waits its "
                                     "turn (default: a quarter of this machine's memory)"),
        ("max_queue_wait_s", float, "how long a request may wait for budget to start before it gets 503 + Retry-After"),
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

    values = {name: getattr(args, name) for name in ServeSettings.model_fields if hasattr(args, name)}
    values["hpi_config"] = parse_json_object(args.hpi_config, "--hpi_config") if args.hpi_config else None
    values["pipeline_options"] = parse_json_object(args.pipeline_options, "--pipeline_options") if args.pipeline_options else None
    values["cors_origins"] = tuple(o.strip() for o in args.cors_origins.split(",") if o.strip())
    values["visualize"] = not args.no_visualize
    return ServeSettings(**values)


def engine_options(args: argparse.Namespace) -> EngineOptions:
    if args.workers is not None and args.instances is not None and args.workers != args.instances:
        raise ConfigError("--workers is --instances for the basic engine: give one of them")
    try:
        ports = tuple(int(port) for port in args.triton_ports.split(","))
    except ValueError:
        ports = ()
    if len(ports) != 3:
        raise ConfigError(f"--triton_ports takes three ports HTTP,gRPC,metrics, got {args.triton_ports!r}")
    instances = next((n for n in (args.instances, args.workers) if n is not None), 1)
    return EngineOptions(args.engine, instances, args.max_instances, args.address, ports)


def _serve(args: argparse.Namespace) -> int:
    """Exit status: 0 after a shutdown that cut no request short, 1 when requests got 503 because the drain timed
    out or a second signal came (the same for SIGTERM and SIGINT)."""
    import uvicorn

    from .app import create_app

    settings = settings_from_args(args)
    options = engine_options(args)
    if options.instances < 1:
        raise ConfigError(f"--instances must be >= 1, got {options.instances}")
    if options.instances > 1 and (settings.jobs_dir or settings.ui):
        raise ConfigError("--jobs_dir and --ui need one instance (one process runs the jobs)")
    common = dict(host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False,
                  timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    if options.engine != "basic":
        from .remote import serve

        serve(settings, options, **common)
        return 0
    if options.instances > 1:  # each worker process builds its own app (and pipeline) from the settings
        create_app(settings)  # fail fast here on a bad pipeline name or YAML
        os.environ.update({SETTINGS_ENV: settings.to_env(), LOG_LEVEL_ENV: args.log_level})
        uvicorn.run("hpinfer.serving.app:app_from_env", factory=True, workers=options.instances, **common)
        return 0
    # One process: load the models before listening, so that loading errors end the command plainly.
    pipeline = settings.load_pipeline()
    app = create_app(settings, pipeline)
    # uvicorn re-raises the signals it handled once it has shut down: these take them instead of a traceback
    # (SIGINT) or a death by signal that would skip closing the pipeline (SIGTERM).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(app, **common)
    finally:
        busy = any(t.name.startswith("hpinfer-infer") and t.is_alive() for t in threading.enumerate())
        if not busy:  # closing engines under a batch still running could crash; exit below instead
            pipeline.close()
    cut = app.state.service.cut
    if cut:
        print(f"{cut} request(s) in flight were answered 503 at shutdown", file=sys.stderr)
    if busy:  # a batch still running would hold the interpreter's exit up (it joins worker threads)
        sys.stderr.flush()
        os._exit(1)
    return 1 if cut else 0


def _client(args: argparse.Namespace) -> int:
    """Each input is sent and reported on its own; one that fails is reported (``failed: <input>: <why>``) and
    the rest still run. Exit status as ``predict``: 2 when the only input failed, 3 when some of several did."""
    from ..config import parse_json_object
    from .client import Client, save_response, summary

    params: Dict[str, Any] = parse_json_object(args.params, "--params") if args.params else {}
    if args.no_visualize:
        params["visualize"] = False
    failed = 0
    with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
        for source in args.input:
            try:
                response = client.predict(source, **params)
            except HpinferError as err:
                if len(args.input) == 1:
                    raise
                failed += 1
                print(f"failed: {source}: {err}", file=sys.stderr)
                continue
            print(summary(source, response))
            if args.save_path:
                stem = Path(source.split("?")[0].rstrip("/")).stem or "result"
                for path in save_response(response, args.save_path, stem):
                    print(f"  saved {path}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(args.input)} input(s) failed (see the 'failed:' lines above); the rest completed",
              file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m hpinfer.serving serve|client ...``: the same commands without going through ``hpinfer``."""
    import logging

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
