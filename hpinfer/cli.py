"""``hpinfer`` command line: ``predict`` for pipelines or single models, ``bench`` to time them,
``models``/``pipelines`` to list.

Errors a user can fix (bad input, unknown model, invalid config) print one line and exit 2.
Options the parser does not know (``--text_det_thresh 0.4``) go to the pipeline or model as
keyword options, their values read as YAML (``False``, ``0.4``, ``[1, 2]``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from .config import parse_json_object
from .errors import EXIT_SOME_FAILED, ConfigError, HpinferError
from .commands import build as build_command, cache as cache_command
from . import tune
from .commands import genai_server
from .commands import doctor
from .serving import cli as serving_cli

log = logging.getLogger("hpinfer")


def _extra_options(tokens: Sequence[str]) -> Dict[str, Any]:
    options: Dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {token!r}")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"option --{key} needs a value")
            value = tokens[i + 1]
            i += 1
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key] = value
        i += 1
    return options


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser = argparse.ArgumentParser(prog="hpinfer", description="Fast OCR and document AI inference.")
    commands = parser.add_subparsers(dest="command", required=True)

    # What a command works on: exactly one of a pipeline, a built-in model or a model directory.
    target = argparse.ArgumentParser(add_help=False)
    choice = target.add_mutually_exclusive_group(required=True)
    choice.add_argument("--pipeline", help="bundled pipeline name (see 'hpinfer pipelines') or a pipeline YAML path")
    choice.add_argument("--model", help="a built-in model name (see 'hpinfer models')")
    choice.add_argument("--model_dir", help="your own model directory (ONNX file + hpinfer.yaml)")

    predict = commands.add_parser(
        "predict", parents=[common, target], help="run a pipeline or a single model",
        epilog="Other --name value options are passed to the pipeline/model, e.g. --use_textline_orientation False",
    )
    predict.add_argument("--input", required=True, help="image file, directory, PDF or http(s) URL")
    predict.add_argument("--device", default=None, help="cpu (default) or gpu:N")
    predict.add_argument("--use_hpip", action="store_true", default=None, help="high-performance inference: pick the best engine")
    predict.add_argument("--hpi_config", default=None, help='JSON, e.g. \'{"backend": "openvino"}\'')
    predict.add_argument("--save_path", default=None, help="folder for result JSON and visualisation images")
    predict.add_argument("--page_range", default=None, help="PDF pages, 1-based: 3 or 2-5")

    bench = commands.add_parser(
        "bench", parents=[common, target], help="time a pipeline or model: per-stage times, latency, throughput, memory",
        epilog="Inputs are decoded once before timing; latency is per call of --batch_size images. A pipeline with "
        "predict_batch (OCR) processes a call's images together; a single model takes them one after another, so "
        "there --batch_size changes how latency is counted, not the work. "
        "Other --name value options are passed to the pipeline (or, for a model, to predict).",
    )
    bench.add_argument("--input", required=True, help="image file, directory or PDF")
    bench.add_argument("--warmup", type=int, default=1, help="untimed passes over the inputs first (default 1)")
    bench.add_argument("--iters", type=int, default=3, help="timed passes over the inputs (default 3)")
    bench.add_argument("--batch_size", type=int, default=1, help="images per predict call (default 1)")
    bench.add_argument("--device", default=None, help="cpu (default) or gpu:N")
    bench.add_argument("--use_hpip", action="store_true", default=None, help="high-performance inference: pick the best engine")
    bench.add_argument("--hpi_config", default=None, help='JSON, e.g. \'{"backend": "openvino"}\'')
    bench.add_argument("--page_range", default=None, help="PDF pages, 1-based: 3 or 2-5")
    bench.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    bench.add_argument(
        "--profile", type=int, nargs="?", const=25, default=None, metavar="N",
        help="then profile each model's engine (torch engine: per ONNX op and, on a GPU, per CUDA kernel; top N rows, default 25)",
    )

    commands.add_parser("models", parents=[common], help="list built-in models and where they come from")
    commands.add_parser("pipelines", parents=[common], help="list bundled pipelines")
    build_command.add_parser(commands, common, target)
    cache_command.add_parser(commands, common)
    serving_cli.add_commands(commands, common)
    tune.add_command(commands, common)
    genai_server.add_parser(commands, common)
    doctor.add_parser(commands, common)
    return parser




def _predict(args: argparse.Namespace, options: Dict[str, Any]) -> int:
    """Results stream from the pipeline's (or model's) own ``predict_iter``. A PDF page or a file of a directory
    that cannot be read is reported on stderr (``failed: <input> [page N]: <why>``) and skipped; the rest still
    runs and the exit code is then ``EXIT_SOME_FAILED``. A single unreadable image is a plain error (exit 2)."""
    from tqdm import tqdm

    from .io.inputs import parse_page_range
    from .io.pages import FailedPage

    page_range = parse_page_range(args.page_range) if args.page_range else None
    total, several = _count_pages(args.input, page_range)  # a missing or unreadable input fails fast
    runner, call_options = _create_runner(args, options)
    progress = tqdm(total=total, unit="image", file=sys.stderr, disable=total is not None and total < 2)
    saver = _Saver(args.save_path)
    count = failed = 0
    on_error = "result" if several else "raise"
    try:
        for result in runner.predict_iter(args.input, page_range=page_range, on_error=on_error, **call_options):
            if result.get("error"):  # a page that could not be read or processed: the run goes on
                failed += 1
                tqdm.write(f"failed: {_where(result)}: {_strip_name(result['error'], result.get('input_path'))}", file=sys.stderr)
            if not isinstance(result, FailedPage):
                count += 1
                _report(result, saver)
            progress.update(1)
    finally:
        progress.close()
        saver.close()
    if args.save_path:
        log.info("saved %d result(s) to %s", count, args.save_path)
    if failed:
        print(f"{failed} input(s) or page(s) failed (see the 'failed:' lines above); the rest completed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def _count_pages(inputs: str, page_range: Optional[Tuple[int, int]]) -> Tuple[Optional[int], bool]:
    """How many images and pages ``inputs`` holds (None: unknown, e.g. a URL), and whether it is a directory or
    a PDF file, whose bad files or pages are skipped; one image or URL must be readable (else InputError)."""
    from .errors import InputError
    from .io.inputs import _expand_path, count_inputs

    if "://" not in inputs and os.path.isdir(inputs):
        counts = []
        for path in _expand_path(inputs):
            try:
                counts.append(count_inputs(path, page_range))
            except InputError:
                counts.append(1)  # reported in turn, as one failure
        return (None if None in counts else sum(counts)), True
    return count_inputs(inputs, page_range), "://" not in inputs and inputs.lower().endswith(".pdf")


def _strip_name(message: str, path: Optional[str]) -> str:
    """An input error without the leading "<path>: " that the failure line already shows."""
    prefix = f"{path}: " if path else ""
    return message[len(prefix):] if prefix and message.startswith(prefix) else message


def _create_runner(args: argparse.Namespace, options: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """The pipeline or model the command names, and the options for each of its predict calls
    (a pipeline takes extra options at creation, a model per call)."""
    from .models import create_model
    from .pipelines import create_pipeline

    hpi = parse_json_object(args.hpi_config, "--hpi_config") if args.hpi_config else None
    if args.pipeline:
        return create_pipeline(args.pipeline, device=args.device, use_hpip=args.use_hpip, hpi_config=hpi, **options), {}
    model = create_model(args.model, args.model_dir, device=args.device, use_hpip=bool(args.use_hpip), hpi_config=hpi)
    return model, options


def _bench(args: argparse.Namespace, options: Dict[str, Any]) -> int:
    import json

    from .bench import benchmark, check_counts
    from .io.inputs import count_inputs, parse_page_range

    page_range = parse_page_range(args.page_range) if args.page_range else None
    check_counts(args.warmup, args.iters, args.batch_size)
    count_inputs(args.input, page_range)  # fails fast on a missing or unreadable input, before loading models
    runner, call_options = _create_runner(args, options)
    report = benchmark(
        runner, args.input, warmup=args.warmup, iters=args.iters, batch_size=args.batch_size,
        page_range=page_range, **call_options,
    )
    print(report.format())
    profiles = None
    if args.profile is not None:
        from .bench import format_profiles, profile_engines

        if args.profile < 1:
            raise ConfigError(f"--profile {args.profile}: must be an integer >= 1")
        profiles = profile_engines(runner, args.input, rows=args.profile, page_range=page_range, **call_options)
        print()
        print(format_profiles(profiles))
    if args.json:
        try:
            data = report.to_dict() if profiles is None else {**report.to_dict(), "profile": profiles}
            Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"--json {args.json}: cannot write ({err.strerror or err})") from None
    return 0


def _where(result) -> str:
    where = result.get("input_path") or "input"
    if result.get("page_index") is not None:
        where += f" [page {result['page_index'] + 1}]"
    return where


class _Saver:
    """``--save_path``: each result's JSON and picture, and for results that make Markdown (layout_parsing) one
    Markdown document per input, ``<stem>_res.md``, its pages separated by rules, images in ``imgs/``."""

    def __init__(self, save_path: Optional[str]):
        self.save_path = Path(save_path) if save_path else None
        self._doc: Any = None
        self._doc_input: Any = None

    def save(self, result) -> None:
        if self.save_path is None:
            return
        result.save_to_json(self.save_path)
        result.save_to_img(self.save_path)
        if hasattr(result, "save_to_markdown"):
            from .pipelines.markdown import MarkdownDocument

            source = result.get("input_path")
            if self._doc is None or source != self._doc_input:
                self.close()
                stem = Path(str(source)).stem if source else "input"
                self._doc, self._doc_input = MarkdownDocument(self.save_path / f"{stem}_res.md"), source
            self._doc.add(result)

    def close(self) -> None:
        if self._doc is not None:
            self._doc.close()
            self._doc = None


def _report(result, saver: _Saver) -> None:
    where = _where(result)
    if "rec_texts" in result:
        texts: List[str] = result["rec_texts"]
        print(f"{where}: {len(texts)} text line(s)")
        for text, score in zip(texts, result["rec_scores"]):
            print(f"  {score:.3f}  {text}")
    else:
        print(f"{where}:")
        result.print()
    saver.save(result)


def _list_models() -> int:
    from .errors import ModelNotFoundError
    from .models import BUILT_IN, resolve_model

    for name, entry in sorted(BUILT_IN.items()):
        try:
            resolve_model(name)
            state = "installed"
        except ModelNotFoundError:
            state = f"not installed: {entry.install}"
        print(f"{name:28s} {entry.task:22s} {entry.pip:30s} {state}")
    return 0


def _list_pipelines() -> int:
    from .pipelines import bundled_pipelines

    print("\n".join(bundled_pipelines()))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, unknown = _parser().parse_known_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "predict":
            return _predict(args, _extra_options(unknown))
        if args.command == "bench":
            return _bench(args, _extra_options(unknown))
        if unknown:
            raise ConfigError(f"unexpected arguments: {' '.join(unknown)}")
        if args.command in ("build", "cache"):
            return (build_command if args.command == "build" else cache_command).run(args)
        if args.command in serving_cli.COMMANDS:
            return serving_cli.run(args)
        if args.command == "genai-server":
            return genai_server.run(args)
        if args.command == "tune":
            return tune.run_command(args)
        if args.command == "doctor":
            return doctor.run(args)
        return _list_models() if args.command == "models" else _list_pipelines()
    except HpinferError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug, not a user error: one line unless asked for the traceback
        if os.environ.get("HPINFER_DEBUG"):
            raise
        print(f"internal error: {type(err).__name__}: {err} (set HPINFER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
