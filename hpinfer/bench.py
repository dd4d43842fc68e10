"""Where the time goes: per-stage timings, end-to-end latency, throughput and memory of a pipeline or model.

``benchmark(runner, inputs, warmup=1, iters=3)`` decodes the inputs once, runs ``runner.predict``
``warmup`` untimed passes and ``iters`` timed passes over them, and returns a ``BenchReport``
(``.format()`` for people, ``.to_dict()`` for JSON). ``hpinfer bench`` on the command line prints it.

How stages are measured. Timers are plain ``StageTimer`` objects, off (one attribute test per span)
except while ``benchmark`` runs. Each sub-module's timer collects:

- "call": the whole sub-module call (marked by the OCR pipeline, or by ``Predictor.predict_iter``);
- "infer": each engine run (marked by ``EngineSession.run``);
- "pre"/"post": the predictor's own pre- and post-processing, where it marks them.

Where a predictor marks no pre/post of its own, they are read off the timeline of the call: "pre" is
the time before its first engine run, "post" the time after its last, and the gaps between engine
runs of a batched call (post-processing of batch k plus pre-processing of batch k+1) are reported as
"pre+post between batches". An engine run outside any "call" (a caller that marks none) counts as a
call of its own, with only "infer" known; the processing around it then shows as "pipeline / other".
The pipeline's own work (image bounds, cropping, assembling the result)
is reported under "pipeline", and whatever is left of the end-to-end time (result objects, input
wrapping) as "pipeline / other".

``batch_size``: inputs go ``batch_size`` at a time to the runner and latency is per call. A runner
with ``predict_batch`` (the OCR pipeline: text lines of all the call's images recognised together)
gets them that way; any other gets ``predict(list)``, which processes the images one after another,
so there a larger batch size changes only how latency is counted, not the work done. The report's
``batching`` says which.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError, InputError
from .runtime.engines.base import Span, StageTimer

__all__ = ["BenchReport", "ModuleReport", "StageStats", "StageTimer", "benchmark", "format_profiles", "profile_engines"]

BETWEEN = "pre+post between batches"
_STAGE_ORDER = ["pre", "infer", "post", BETWEEN]


@dataclass
class StageStats:
    """One stage over every call of its module: per-call times (ms), total (s) and share of end-to-end time."""

    calls: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    total_s: float
    share: float

    @classmethod
    def of(cls, seconds: Sequence[float], end_to_end_s: float) -> "StageStats":
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        total = float(ms.sum()) / 1000.0
        return cls(
            calls=len(ms), mean_ms=float(ms.mean()), median_ms=float(np.median(ms)),
            p90_ms=float(np.percentile(ms, 90)), total_s=total,
            share=total / end_to_end_s if end_to_end_s > 0 else 0.0,
        )


@dataclass
class ModuleReport:
    """A sub-module: the engine it ran on, how often it was called, and its stage times."""

    model: Optional[str]
    backend: Optional[str]
    settings: Optional[str]
    calls: int
    engine_runs: int
    stages: Dict[str, StageStats] = field(default_factory=dict)


@dataclass
class BenchReport:
    target: str
    inputs: int  # distinct images (PDF pages count one each)
    warmup: int
    iters: int
    batch_size: int
    images_timed: int
    time_s: float  # sum of timed predict calls
    throughput: float  # images / s
    batching: str  # how a call of batch_size images ran
    latency_ms: Dict[str, float]  # per predict call of batch_size images: mean, min, p50, p90, p99, max
    decode_ms: float  # mean decode time per input, done once before timing (not in latency)
    peak_rss_mb: float
    modules: Dict[str, ModuleReport]
    pipeline: Dict[str, StageStats]
    environment: Dict[str, str]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        env = self.environment
        w = max([20, *(len(name) for name in self.modules)])
        lines = [
            f"hpinfer bench: {self.target} | {self.inputs} input image(s) x {self.iters} iteration(s) "
            f"after {self.warmup} warm-up pass(es), batch_size {self.batch_size} ({self.batching})",
            f"machine: {env.get('cpu')}, {env.get('cores')} core(s); python {env.get('python')}",
            "",
            "engines:",
        ]
        for name, module in self.modules.items():
            lines.append(f"  {name:{w}s} {module.model or '-':28s} {module.backend or '-':12s} {module.settings or ''}")
        per = "image" if self.batch_size == 1 else f"call of {self.batch_size} images"
        lat = self.latency_ms
        lines += [
            "",
            f"end-to-end: {self.images_timed} images in {self.time_s:.3f} s -> {self.throughput:.2f} images/s",
            f"latency per {per} (ms): p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
            f"mean {lat['mean']:.1f}  min {lat['min']:.1f}  max {lat['max']:.1f}",
            f"decoding (once, not timed above): {self.decode_ms:.1f} ms per input; peak RSS {self.peak_rss_mb:.0f} MiB",
            "",
            f"{'module':{w}s} {'stage':26s} {'calls':>6s} {'mean ms':>9s} {'median ms':>10s} {'p90 ms':>9s} {'total s':>9s} {'share':>7s}",
        ]
        rows: List[Tuple[str, str, StageStats]] = []
        for name, module in self.modules.items():
            rows += [(name, stage, stats) for stage, stats in module.stages.items()]
        rows += [("pipeline", stage, stats) for stage, stats in self.pipeline.items()]
        shown = None
        for name, stage, s in rows:
            lines.append(
                f"{(name if name != shown else ''):{w}s} {stage:26s} {s.calls:6d} {s.mean_ms:9.2f} {s.median_ms:10.2f} "
                f"{s.p90_ms:9.2f} {s.total_s:9.3f} {s.share:7.1%}"
            )
            shown = name
        if any(BETWEEN in m.stages for m in self.modules.values()):
            lines.append(f"('{BETWEEN}': post-processing of one engine batch and pre-processing of the next, "
                         "not separable until the predictor marks its own stages)")
        return "\n".join(lines)


def benchmark(
    runner: Any,
    inputs: Any,
    warmup: int = 1,
    iters: int = 3,
    batch_size: int = 1,
    page_range: Optional[Tuple[int, int]] = None,
    **predict_options: Any,
) -> BenchReport:
    """Time ``runner`` (a pipeline from ``create_pipeline`` or a model from ``create_model``) on ``inputs``.

    ``inputs``: anything ``predict`` accepts (file, directory, PDF, arrays...); decoded once up front.
    ``predict_options`` are passed to every ``runner.predict`` call.
    """
    from .io import iter_inputs

    check_counts(warmup, iters, batch_size)
    timers, modules = _timers(runner)

    images: List[np.ndarray] = []
    decode_start = time.perf_counter()
    for item in iter_inputs(inputs, page_range=page_range):
        images.append(item.image)
    decode_s = time.perf_counter() - decode_start
    if not images:
        raise InputError("benchmark: the inputs hold no images")
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    together = batch_size > 1 and callable(getattr(runner, "predict_batch", None))
    if together:
        batching = "predict_batch: the images of a call processed together"
        call = lambda batch: runner.predict_batch(batch, **predict_options)  # noqa: E731
    else:
        batching = "predict: one image at a time" if batch_size == 1 else "predict(list): images of a call one after another"
        call = lambda batch: runner.predict(batch[0] if len(batch) == 1 else batch, **predict_options)  # noqa: E731

    for _ in range(warmup):
        for batch in batches:
            call(batch)

    latencies: List[float] = []
    spans: Dict[str, List[List[Span]]] = {name: [] for name in timers}
    for timer in timers.values():
        timer.drain()
        timer.enabled = True
    try:
        for _ in range(iters):
            for batch in batches:
                start = time.perf_counter()
                call(batch)
                latencies.append(time.perf_counter() - start)
                for name, timer in timers.items():
                    spans[name].append(timer.drain() if name == "pipeline" else _with_calls(timer.drain()))
    finally:
        for timer in timers.values():
            timer.enabled = False
            timer.drain()

    total = float(sum(latencies))
    images_timed = iters * len(images)
    reports: Dict[str, ModuleReport] = {}
    for name, (model, backend, settings) in modules.items():
        per_call, engine_runs = _module_stages(spans[name])
        reports[name] = ModuleReport(
            model, backend, settings, calls=len(next(iter(per_call.values()), [])), engine_runs=engine_runs,
            stages={stage: StageStats.of(values, total) for stage, values in per_call.items()},
        )
    # The pipeline's own stages, then what no span covers (result objects, input wrapping): "other".
    pipeline: Dict[str, StageStats] = {}
    own = spans.pop("pipeline", None) or [[] for _ in latencies]
    order = ["pre", "crop", "post"]
    for stage in sorted({n for call_spans in own for n, _, _ in call_spans}, key=lambda n: (order + [n]).index(n)):
        pipeline[stage] = StageStats.of([sum(e - s for n, s, e in c if n == stage) for c in own], total)
    covered = [
        sum(e - s for _, s, e in own[i]) + sum(e - s for per in spans.values() for n, s, e in per[i] if n == "call")
        for i in range(len(latencies))
    ]
    pipeline["other"] = StageStats.of([max(0.0, lat - cov) for lat, cov in zip(latencies, covered)], total)
    lat_ms = np.asarray(latencies) * 1000.0
    return BenchReport(
        target=_describe(runner),
        inputs=len(images), warmup=warmup, iters=iters, batch_size=batch_size, batching=batching,
        images_timed=images_timed, time_s=total,
        throughput=images_timed / total if total > 0 else 0.0,
        latency_ms={
            "mean": float(lat_ms.mean()), "min": float(lat_ms.min()), "p50": float(np.percentile(lat_ms, 50)),
            "p90": float(np.percentile(lat_ms, 90)), "p99": float(np.percentile(lat_ms, 99)), "max": float(lat_ms.max()),
        },
        decode_ms=decode_s * 1000.0 / len(images),
        peak_rss_mb=peak_rss_mb(),
        modules=reports,
        pipeline=pipeline,
        environment=environment(),
    )


def profile_engines(
    runner: Any, inputs: Any, iters: int = 10, rows: int = 25, page_range: Optional[Tuple[int, int]] = None,
    **predict_options: Any,
) -> Dict[str, str]:
    """Per sub-module, where its engine's time goes (``hpinfer bench --profile``): one ``predict`` pass over
    ``inputs`` records each engine's largest input (device pre-processing off, so that it is the model's own
    input), then ``session.profile`` runs it ``iters`` times under the torch profiler: a table per ONNX op type
    and, on a GPU, per CUDA kernel, top ``rows`` by time. Engines without a profiler say so."""
    from .io import iter_inputs

    timers, modules = _timers(runner)
    sub_modules = getattr(runner, "sub_modules", None) or {next(iter(modules)): runner}
    largest: Dict[str, Dict[str, np.ndarray]] = {}
    with contextlib.ExitStack() as stack:
        for name, predictor in sub_modules.items():
            session = predictor.session

            def keep_largest(feeds, _name=name):
                if sum(a.size for a in feeds.values()) > sum(a.size for a in largest.get(_name, {}).values()):
                    largest[_name] = {k: np.array(v) for k, v in feeds.items()}

            stack.enter_context(session.watching_feeds(keep_largest))
            if hasattr(session, "image_runner"):
                session.image_runner = lambda *args: None  # instance attribute, removed below
                stack.callback(session.__dict__.pop, "image_runner", None)
        for item in iter_inputs(inputs, page_range=page_range):
            runner.predict(item.image, **predict_options)
    out: Dict[str, str] = {}
    for name, predictor in sub_modules.items():
        session = predictor.session
        feeds = largest.get(name)
        shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in (feeds or {}).items())
        if feeds is None:
            out[name] = "not run on these inputs"
        elif not callable(getattr(session, "profile", None)):
            out[name] = (
                f"engine {session.backend} has no per-op profiler: use the torch engine "
                "(--use_hpip --hpi_config '{\"auto_config\": false, \"backend\": \"torch\"}'; on a GPU with --device gpu:0 "
                "for per-kernel CUDA times)"
            )
        else:
            out[name] = f"[{session.settings}] input {shapes}\n" + session.profile(feeds, iters=iters, rows=rows)
    return out


def format_profiles(profiles: Dict[str, str]) -> str:
    return "\n\n".join(f"== profile: {name} ==\n{text}" for name, text in profiles.items())


def check_counts(warmup: int, iters: int, batch_size: int) -> None:
    for name, value, low in (("warmup", warmup, 0), ("iters", iters, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name} {value!r}: must be an integer >= {low}")


def _timers(runner: Any) -> Tuple[Dict[str, StageTimer], Dict[str, Tuple[Optional[str], Optional[str], Optional[str]]]]:
    """The timers to switch on (sub-modules by name, and "pipeline"), and each sub-module's engine."""
    sub_modules = getattr(runner, "sub_modules", None)
    if sub_modules is None:
        if not hasattr(runner, "session") or not hasattr(runner, "predict"):
            raise ConfigError(f"benchmark: {type(runner).__name__} is neither a pipeline nor a model")
        sub_modules = {runner.kind.module_name: runner}  # reported under PaddleX's module name
    timers: Dict[str, StageTimer] = {}
    modules = {}
    for name, predictor in sub_modules.items():
        timers[name] = predictor.timer
        modules[name] = (predictor.name, predictor.session.backend, predictor.session.settings)
    if isinstance(getattr(runner, "timer", None), StageTimer) and runner.timer not in timers.values():
        timers["pipeline"] = runner.timer
    return timers, modules


def _with_calls(spans: List[Span]) -> List[Span]:
    """An engine run that no "call" span covers (a caller that marks no calls) counts as a call of its own."""
    calls = [(s, e) for n, s, e in spans if n == "call"]
    alone = [("call", s, e) for n, s, e in spans if n == "infer" and not any(cs <= s and e <= ce for cs, ce in calls)]
    return spans + alone


def _module_stages(calls_spans: List[List[Span]]) -> Tuple[Dict[str, List[float]], int]:
    """Per sub-module call, seconds in each stage; and the number of engine runs."""
    per_call: List[Dict[str, float]] = []
    engine_runs = 0
    for spans in calls_spans:
        for _, c_start, c_end in [s for s in spans if s[0] == "call"]:
            inner = [s for s in spans if s[0] != "call" and s[1] >= c_start and s[2] <= c_end]
            infer = sorted((s for s in inner if s[0] == "infer"), key=lambda s: s[1])
            engine_runs += len(infer)
            stages = {"infer": sum(e - s for _, s, e in infer)}
            marked = [s for s in inner if s[0] != "infer"]
            if marked:  # the predictor marks its own stages: take them, the rest is unmarked overhead
                for name, s, e in marked:
                    stages[name] = stages.get(name, 0.0) + (e - s)
                stages["other"] = max(0.0, (c_end - c_start) - sum(stages.values()))
            elif infer:
                stages["pre"] = infer[0][1] - c_start
                stages["post"] = c_end - infer[-1][2]
                stages[BETWEEN] = sum(nxt[1] - prev[2] for prev, nxt in zip(infer, infer[1:]))
            else:  # no engine run (e.g. an image too small to detect on): all of it is processing
                stages["pre"] = c_end - c_start
            per_call.append(stages)
    names = {name for stages in per_call for name in stages}
    ordered = [n for n in _STAGE_ORDER if n in names] + sorted(names - set(_STAGE_ORDER))
    result = {name: [stages.get(name, 0.0) for stages in per_call] for name in ordered}
    # A stage that never took any time (e.g. between batches of a model that runs one batch) is noise.
    return {name: values for name, values in result.items() if name == "infer" or any(values)}, engine_runs


def _describe(runner: Any) -> str:
    settings = getattr(runner, "settings", None)
    if settings is not None and hasattr(settings, "pipeline_name"):
        source = settings.source.removeprefix("pipeline ")
        return f"pipeline {source}" if source == settings.pipeline_name else f"pipeline {settings.pipeline_name} ({source})"
    return f"model {runner.name}"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (models loaded included), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def environment() -> Dict[str, str]:
    from . import __version__
    from .runtime.hardware import cpu_count, cpu_name

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name(),
           "cores": str(cpu_count()), "hpinfer": __version__}
    for package in ("onnxruntime", "openvino", "numpy", "opencv-python-headless"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return env
