"""``hpinfer tune``: try each sub-module's engine configurations on your own samples, keep the fastest whose
results stay within tolerance of fp32, and write a pipeline YAML that uses them.

1. collect: the pipeline runs once over the samples with standard inference (ONNX Runtime, fp32: the
   reference), one image at a time, and every engine call of every sub-module is recorded, inputs and
   outputs; these are the real per-module inputs (detection tensors, recognition batches of line crops).
2. measure: per sub-module, per candidate (engine x precision x threads, x lines per call for recognition),
   the model is loaded so and run on the recorded inputs: one untimed pass (its outputs are the ones
   compared), then ``repeats`` timed passes, of which the fastest counts (least disturbed by other load).
   Drift from the reference is the task's metric of ``hpinfer.runtime.accuracy`` (detection 1 - box F1 x
   IoU, recognition CER, classification 1 - top-1 agreement).
3. choose: candidates within 10% of a sub-module's fastest are timed again in interleaved rounds (outside
   load then falls on all of them alike); per sub-module the fastest candidate at fp32, or at a reduced precision whose drift is at most
   the tolerance (``--tolerance``, else the task's default). fp32 is the reference precision: its drift (an
   engine's float rounding) is shown but never rejects it.
4. write: the pipeline's own YAML with ``use_hpip: true`` and, per sub-module, the winner's ``hpi_config``
   (manual mode: it runs as measured) and for recognition ``max_batch_size`` (speed only: results do not
   depend on it). A sub-module's own ``hpi_config`` is the highest level of the precedence rules, so it
   holds even when ``--hpi_config`` is given at the command line.
5. verify (with an output path; ``verify_output=False`` / ``--no_verify`` skip it): the written YAML is loaded with
   ``create_pipeline(path)`` and timed end to end, ``predict`` one image at a time on the same decoded samples,
   against the pipeline with plain ``use_hpip=True`` defaults: one untimed warm-up pass each, then ``repeats``
   passes interleaved (tuned, default, tuned, default, ...) so that load from outside falls on both alike.
   Each pass is ``hpinfer.bench.benchmark(..., warmup=0, iters=1)``, i.e. timed as ``hpinfer bench`` times it;
   the *median* pass counts (closer to the mean that ``hpinfer bench`` prints than the fastest would be).
   The numbers are printed, kept in ``TuneReport.tuned_speed`` / ``default_speed`` and written into the YAML's
   header comment, so that ``hpinfer bench --pipeline tuned.yaml --input samples`` can later be checked
   against them.

Modules are timed alone, one call at a time, as ``predict`` runs them.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger("hpinfer.tune")

DEFAULT_ENGINES = ("openvino", "onnxruntime")
DEFAULT_PRECISIONS = ("fp32", "bf16")
DEFAULT_BATCHES = (6, 16, 32)  # recognition lines per engine call (max_batch_size)
FINAL_MARGIN = 0.10  # candidates this close to a module's fastest are timed again, interleaved
REFERENCE = "fp32"

Feeds = Dict[str, np.ndarray]


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str
    threads: int
    batch: Optional[int] = None  # recognition: lines per engine call; None for other tasks
    calibration_samples: Optional[int] = None  # int8: calibration inputs (None: calibration's default)

    def backend_config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"cpu_num_threads": self.threads, "precision": self.precision}
        if self.precision == "int8" and self.calibration_samples is not None:
            config["calibration"] = {"num_samples": self.calibration_samples}
        return config

    def hpi_config(self) -> Dict[str, Any]:
        return {"auto_config": False, "backend": self.backend, "backend_config": self.backend_config()}

    def label(self) -> str:
        batch = "" if self.batch is None else f" batch={self.batch}"
        return f"{self.backend} {self.precision} threads={self.threads}{batch}"


@dataclass
class Recorded:
    """One sub-module's engine calls during the reference run."""

    key: str  # its SubModules key
    task: str
    model_name: str
    model_path: Path
    params: Any  # the predictor's processing parameters (the detection drift metric needs them)
    calls: List[Tuple[Feeds, List[np.ndarray]]] = field(default_factory=list)  # inputs, reference outputs


@dataclass
class Trial:
    module: str
    candidate: Candidate
    ms: Optional[float] = None  # fastest pass over the module's recorded inputs
    drift: Optional[float] = None
    verdict: str = ""  # ok | rejected (...) | failed (...) | skipped (...)
    chosen: bool = False

    @property
    def ok(self) -> bool:
        return self.verdict.startswith("ok")


@dataclass
class PipelineSpeed:
    """A pipeline timed end to end, ``predict`` one image at a time: the median of ``passes_ms`` (one pass =
    every sample once) counts."""

    label: str  # "tuned" | "use_hpip defaults"
    images: int  # per pass
    passes_ms: List[float]

    @property
    def ms_per_image(self) -> float:
        return float(np.median(self.passes_ms)) / self.images

    @property
    def images_per_s(self) -> float:
        return 1000.0 / self.ms_per_image if self.ms_per_image > 0 else 0.0


@dataclass
class TuneReport:
    trials: List[Trial]
    chosen: Dict[str, Candidate]  # per SubModules key
    output: Optional[Path]
    images: int
    tuned_speed: Optional[PipelineSpeed] = None  # the written YAML, end to end (verify step)
    default_speed: Optional[PipelineSpeed] = None  # the pipeline with plain use_hpip=True, timed interleaved with it
    verify_error: Optional[str] = None  # why the verify step could not run, if it failed

    @property
    def speedup(self) -> Optional[float]:
        """Tuned images/s over use_hpip defaults images/s (> 1: the tuned YAML is faster)."""
        if self.tuned_speed is None or self.default_speed is None or self.default_speed.images_per_s <= 0:
            return None
        return self.tuned_speed.images_per_s / self.default_speed.images_per_s

    def speed_line(self) -> Optional[str]:
        if self.tuned_speed is None or self.default_speed is None:
            return None
        t, d = self.tuned_speed, self.default_speed
        line = (
            f"tuned pipeline: {t.images_per_s:.2f} images/s ({t.ms_per_image:.1f} ms per image) vs use_hpip defaults: "
            f"{d.images_per_s:.2f} images/s ({d.ms_per_image:.1f} ms per image) -- ratio {self.speedup:.2f}x "
            f"(median of {len(t.passes_ms)} interleaved pass(es) over {t.images} image(s), predict one image at a time)"
        )
        if self.output is not None:
            line += f"\ncheck later with: hpinfer bench --pipeline {self.output} --input <the same samples>"
        return line

    def table(self) -> str:
        head = ("module", "engine", "precision", "threads", "batch", "ms", "drift", "verdict")
        rows = [head] + [
            (
                t.module, t.candidate.backend, t.candidate.precision, str(t.candidate.threads),
                "" if t.candidate.batch is None else str(t.candidate.batch),
                "" if t.ms is None else f"{t.ms:.1f}", "" if t.drift is None else f"{t.drift:.4f}",
                t.verdict + ("  <- chosen" if t.chosen else ""),
            )
            for t in self.trials
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


# ------------------------------------------------------------------------------------------------ collect


def load_samples(inputs: Any, max_images: Optional[int] = None) -> List[np.ndarray]:
    from .errors import InputError
    from .io import iter_inputs

    images = []
    for item in iter_inputs(inputs):
        images.append(item.image)
        if max_images is not None and len(images) >= max_images:
            break
    if not images:
        raise InputError(f"{inputs}: no sample images")
    return images


def _record(session: Any, into: Recorded) -> None:
    """Wrap one engine session so that every call's inputs and outputs are kept (copies)."""
    original = session._run

    def run(feeds):
        outputs = original(feeds)
        into.calls.append(({k: np.array(v) for k, v in feeds.items()}, [np.array(o) for o in outputs]))
        return outputs

    session._run = run


def collect(pipeline: "str | Path", images: Sequence[np.ndarray], device: Any = None) -> List[Recorded]:
    """Run the pipeline once over ``images`` (standard inference: ONNX Runtime fp32) and record every
    sub-module's engine calls."""
    from .pipelines import create_pipeline

    with create_pipeline(str(pipeline), device=device, use_hpip=False) as pipe:
        recorded = []
        for key, predictor in pipe.sub_modules.items():
            rec = Recorded(key, predictor.task, predictor.name, predictor.spec.model_file, predictor.params)
            _record(predictor.session, rec)
            recorded.append(rec)
        for image in images:
            pipe.predict(image)
    return [rec for rec in recorded if rec.calls]


# ------------------------------------------------------------------------------------------------ measure


def candidates(
    task: str, engines: Sequence[str], precisions: Sequence[str], threads: Sequence[int],
    batches: Sequence[int], device: Any, calibration_samples: Optional[int] = None,
) -> List[Candidate]:
    """Every combination this machine can run (installed engine, precision it supports)."""
    from .runtime.engines import ENGINES
    from .tasks import TASKS

    found = []
    for backend in engines:
        engine = ENGINES[backend]
        if not engine.is_installed():
            continue
        for precision in precisions:
            if engine.unsupported_reason(device, precision) is not None:
                continue
            for count in threads:
                for batch in (batches if TASKS[task].rebatchable else [None]):
                    found.append(Candidate(backend, precision, count, batch, calibration_samples))
    return found


def open_candidate(rec: Recorded, cand: Candidate, device: Any):
    """The model loaded as ``cand`` says: straight from its file (fast to compile), except int8, which needs
    the quantized model the loader builds and caches (slow the first time)."""
    from .config import BackendConfig, HPIConfig
    from .models import bind_task
    from .runtime.engines import ENGINES
    from .runtime.loader import open_session

    config = BackendConfig(**cand.backend_config())
    if cand.precision != "int8":
        return ENGINES[cand.backend].load(rec.model_path, config, device)
    hpi = HPIConfig(auto_config=False, backend=cand.backend, backend_config=config)
    return open_session(rec.model_name, rec.model_path, device, True, hpi, task=bind_task(rec.task, rec.params))


def rebatch(calls: Sequence[Feeds], batch: Optional[int]) -> Tuple[List[Feeds], List[int]]:
    """The recorded calls cut into calls of at most ``batch`` rows (single-input models), and for each new call
    the recorded call it came from; ``batch`` None keeps them as recorded."""
    if batch is None:
        return list(calls), list(range(len(calls)))
    out, origin = [], []
    for index, feeds in enumerate(calls):
        (name, array), = feeds.items()
        for start in range(0, len(array), batch):
            out.append({name: array[start : start + batch]})
            origin.append(index)
    return out, origin


def run_calls(session: Any, calls: Sequence[Feeds], origin: Sequence[int], repeats: int) -> Tuple[float, List[List[np.ndarray]]]:
    """One untimed pass (its outputs, joined back per recorded call), then the fastest of ``repeats`` timed ones, ms."""
    pieces: List[List[List[np.ndarray]]] = [[] for _ in range(max(origin) + 1)]
    for feeds, index in zip(calls, origin):
        pieces[index].append(session.run(feeds))
    outputs = [[np.concatenate(parts, axis=0) for parts in zip(*got)] for got in pieces]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for feeds in calls:
            session.run(feeds)
        best = min(best, (time.perf_counter() - start) * 1000)
    return best, outputs


def drift_of(rec: Recorded, outputs: List[List[np.ndarray]]) -> Optional[float]:
    from .models import bind_task
    from .runtime import accuracy

    drift = accuracy.measure(bind_task(rec.task, rec.params), [out for _, out in rec.calls], outputs)
    return None if drift is None else drift.value


def verdict(precision: str, drift: Optional[float], tolerance: float) -> str:
    if precision == REFERENCE:
        return "ok"
    if drift is None:
        return "rejected (no accuracy metric for this task)"
    if drift > tolerance:
        return f"rejected (drift > {tolerance:g})"
    return "ok"


def measure(rec: Recorded, cand: Candidate, device: Any, tolerance: float, repeats: int) -> Trial:
    trial = Trial(rec.key, cand)
    try:
        session = open_candidate(rec, cand, device)
    except Exception as err:  # an engine that cannot load the model at this precision is a result, not a crash
        trial.verdict = f"failed ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
        return trial
    try:
        calls, origin = rebatch([feeds for feeds, _ in rec.calls], cand.batch)
        trial.ms, outputs = run_calls(session, calls, origin, repeats)
        trial.drift = drift_of(rec, outputs)
        trial.verdict = verdict(cand.precision, trial.drift, tolerance)
    except Exception as err:
        trial.verdict = f"failed ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
    finally:
        session.close()
    return trial


def choose(trials: Sequence[Trial]) -> Dict[str, Candidate]:
    """Per module, the fastest accepted trial (marked ``chosen``)."""
    best: Dict[str, Trial] = {}
    for trial in trials:
        if trial.ok and (trial.module not in best or trial.ms < best[trial.module].ms):
            best[trial.module] = trial
    for trial in best.values():
        trial.chosen = True
    return {key: trial.candidate for key, trial in best.items()}


def finalists(trials: Sequence[Trial], margin: float = FINAL_MARGIN) -> Dict[str, List[Trial]]:
    """Per module, the accepted trials within ``margin`` of its fastest: too close to call from passes timed
    minutes apart, when other load comes and goes."""
    fastest: Dict[str, float] = {}
    for trial in trials:
        if trial.ok:
            fastest[trial.module] = min(trial.ms, fastest.get(trial.module, float("inf")))
    close: Dict[str, List[Trial]] = {}
    for trial in trials:
        if trial.ok and trial.ms <= fastest[trial.module] * (1 + margin):
            close.setdefault(trial.module, []).append(trial)
    return {module: group for module, group in close.items() if len(group) > 1}


def confirm(rec: Recorded, group: Sequence[Trial], device: Any, repeats: int) -> None:
    """Time the close candidates again in interleaved rounds (A B C, A B C, ...), so that load from outside
    falls on all of them alike; each trial's ``ms`` becomes its fastest interleaved pass."""
    sessions = [open_candidate(rec, trial.candidate, device) for trial in group]
    try:
        plans = [rebatch([feeds for feeds, _ in rec.calls], trial.candidate.batch)[0] for trial in group]
        best = [float("inf")] * len(group)
        for session, calls in zip(sessions, plans):  # warm each once more after the others ran
            for feeds in calls:
                session.run(feeds)
        for _ in range(repeats):
            for i, (session, calls) in enumerate(zip(sessions, plans)):
                start = time.perf_counter()
                for feeds in calls:
                    session.run(feeds)
                best[i] = min(best[i], (time.perf_counter() - start) * 1000)
        for trial, ms in zip(group, best):
            trial.ms = ms
            trial.verdict = "ok (confirmed interleaved)"
    finally:
        for session in sessions:
            session.close()


# -------------------------------------------------------------------------------------------------- write


def tuned_config(pipeline: "str | Path", chosen: Dict[str, Candidate]) -> Dict[str, Any]:
    """The pipeline's YAML mapping with the chosen configuration in each tuned sub-module."""
    from .config import deep_merge
    from .pipelines.config import load_pipeline_file

    data, _ = load_pipeline_file(pipeline)
    data = copy.deepcopy(data)
    data["use_hpip"] = True
    for key, cand in chosen.items():
        module = data["SubModules"][key]
        module["use_hpip"] = True
        module["hpi_config"] = deep_merge(module.get("hpi_config") or {}, cand.hpi_config())
        if cand.batch is not None:
            module["max_batch_size"] = cand.batch
    return data


def write_yaml(data: Dict[str, Any], path: Path, note: str) -> None:
    import yaml

    text = "".join(f"# {line}\n" for line in note.splitlines()) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------------- verify


def verify(
    tuned: "str | Path", pipeline: "str | Path", images: Sequence[np.ndarray], device: Any = None, repeats: int = 3,
) -> Tuple[PipelineSpeed, PipelineSpeed]:
    """Time the tuned YAML and the pipeline with plain ``use_hpip=True`` end to end on ``images``: one warm-up
    pass each, then ``repeats`` passes interleaved (tuned, default, tuned, default, ...). A pass is
    ``hpinfer.bench.benchmark(runner, images, warmup=0, iters=1)``: ``predict`` one image at a time, the sum of
    the calls' latencies, as ``hpinfer bench`` measures."""
    from .bench import benchmark
    from .pipelines import create_pipeline

    images = list(images)
    speeds = (PipelineSpeed("tuned", len(images), []), PipelineSpeed("use_hpip defaults", len(images), []))
    with create_pipeline(str(tuned), device=device) as tuned_pipe, \
            create_pipeline(str(pipeline), device=device, use_hpip=True) as default_pipe:
        runners = (tuned_pipe, default_pipe)
        for runner in runners:  # warm-up: first-call allocations, engine caches
            for image in images:
                runner.predict(image)
        for _ in range(repeats):
            for runner, speed in zip(runners, speeds):
                speed.passes_ms.append(benchmark(runner, images, warmup=0, iters=1).time_s * 1000.0)
    return speeds


def _speed_note(report: TuneReport, pipeline: "str | Path") -> str:
    t, d = report.tuned_speed, report.default_speed
    return (
        f"\nVerified end to end after writing (predict one image at a time, {t.images} image(s), one warm-up pass, median of "
        f"{len(t.passes_ms)} pass(es) interleaved with {pipeline} under use_hpip=True defaults):\n"
        f"  tuned pipeline:     {t.images_per_s:.2f} images/s ({t.ms_per_image:.1f} ms per image)\n"
        f"  use_hpip defaults:  {d.images_per_s:.2f} images/s ({d.ms_per_image:.1f} ms per image)\n"
        f"  ratio tuned/defaults: {report.speedup:.2f}x\n"
        f"Check with: hpinfer bench --pipeline {report.output} --input <the same samples> "
        f"(expect about {t.images_per_s:.2f} images/s on this machine)"
    )


# ----------------------------------------------------------------------------------------------------- all


def tune(
    pipeline: "str | Path",
    inputs: Any,
    output: "str | Path | None" = None,
    tolerance: Optional[float] = None,
    budget_s: Optional[float] = None,
    engines: Sequence[str] = DEFAULT_ENGINES,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    threads: Optional[Sequence[int]] = None,
    batches: Sequence[int] = DEFAULT_BATCHES,
    repeats: int = 3,
    max_images: Optional[int] = 20,
    device: Any = None,
    progress: bool = True,
    verify_output: bool = True,
    calibration_samples: Optional[int] = None,
) -> TuneReport:
    """Measure, choose and (with ``output``) write, then (``verify_output``) time the written YAML against
    ``use_hpip=True`` defaults; see the module docstring. ``threads`` default: 1..cores. ``calibration_samples``:
    int8's calibration inputs (fewer: faster, less exact; the written YAML keeps the number).
    ``budget_s`` bounds the measuring: candidates left when it runs out are skipped (listed as such)."""
    from tqdm import tqdm

    from .device import Device
    from .runtime.hardware import cpu_count
    from .tasks import TASKS

    device = Device.parse(device)
    images = load_samples(inputs, max_images)
    threads = list(threads) if threads else list(range(cpu_count(), 0, -1))
    recorded = collect(pipeline, images, device)
    plan = [
        (rec, cand)
        for rec in recorded
        for cand in candidates(rec.task, engines, precisions, threads, batches, device, calibration_samples)
    ]
    deadline = None if budget_s is None else time.monotonic() + budget_s
    trials = []
    for rec, cand in tqdm(plan, desc="tune", unit="config", file=sys.stderr, disable=not progress):
        if deadline is not None and time.monotonic() > deadline:
            trials.append(Trial(rec.key, cand, verdict="skipped (budget)"))
            continue
        limit = tolerance if tolerance is not None else (TASKS[rec.task].tolerance or 0.0)
        trials.append(measure(rec, cand, device, limit, repeats))
    by_key = {rec.key: rec for rec in recorded}
    for module, group in finalists(trials).items():
        confirm(by_key[module], group, device, repeats)
    chosen = choose(trials)
    path = Path(output) if output else None
    report = TuneReport(trials, chosen, path, len(images))
    if path is not None:
        note = (
            f"Written by `hpinfer tune` on {time.strftime('%Y-%m-%d %H:%M:%S')} from {pipeline}, {len(images)} sample "
            f"image(s).\nPer sub-module the fastest configuration measured whose drift from fp32 is within tolerance."
        )
        data = tuned_config(pipeline, chosen)
        write_yaml(data, path, note)
        if verify_output:
            try:
                report.tuned_speed, report.default_speed = verify(path, pipeline, images, device, repeats)
            except Exception as err:  # the YAML is written; say why it could not be timed rather than lose the tune
                report.verify_error = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                log.warning("verify step failed: %s", report.verify_error)
            else:
                write_yaml(data, path, note + _speed_note(report, pipeline))
    return report


# ------------------------------------------------------------------------------------------------ command


def _int_list(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _str_list(text: str) -> List[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    tune_cmd = commands.add_parser(
        "tune", parents=[common], help="measure engine configurations per sub-module and write a tuned pipeline YAML",
        epilog="Each sub-module's candidates are timed on the inputs it really gets from your samples; "
        "reduced precisions whose results drift from fp32 by more than the tolerance are rejected.",
    )
    tune_cmd.add_argument("--pipeline", required=True, help="bundled pipeline name or a pipeline YAML path")
    tune_cmd.add_argument("--input", required=True, help="sample image file, directory or PDF")
    tune_cmd.add_argument("--output", default=None, help="where to write the tuned pipeline YAML")
    tune_cmd.add_argument("--tolerance", type=float, default=None,
                          help="largest drift from fp32 accepted (default: the task's, e.g. CER 0.02 for recognition)")
    tune_cmd.add_argument("--budget_s", type=float, default=None, help="stop measuring after this many seconds")
    tune_cmd.add_argument("--engines", type=_str_list, default=list(DEFAULT_ENGINES), help="comma-separated (default openvino,onnxruntime)")
    tune_cmd.add_argument("--precisions", type=_str_list, default=list(DEFAULT_PRECISIONS), help="comma-separated (default fp32,bf16)")
    tune_cmd.add_argument("--int8", action="store_true", help="also try int8 (quantizes and calibrates: slow the first time)")
    tune_cmd.add_argument("--calibration_samples", type=int, default=None,
                          help="int8: calibration inputs per model (default: backend_config.calibration's, 100)")
    tune_cmd.add_argument("--threads", type=_int_list, default=None, help="comma-separated thread counts (default 1..cores)")
    tune_cmd.add_argument("--batches", type=_int_list, default=list(DEFAULT_BATCHES), help="recognition lines per call (default 6,16,32)")
    tune_cmd.add_argument("--repeats", type=int, default=3, help="timed passes per candidate; the fastest counts (default 3)")
    tune_cmd.add_argument("--max_images", type=int, default=20, help="samples used at most (default 20)")
    tune_cmd.add_argument("--device", default=None, help="cpu (default)")
    tune_cmd.add_argument("--no_verify", action="store_true",
                          help="skip timing the written YAML end to end against use_hpip defaults")


def run_command(args: argparse.Namespace) -> int:
    from .config import BACKEND_NAMES
    from .errors import ConfigError

    unknown = [e for e in args.engines if e not in BACKEND_NAMES]
    if unknown:
        raise ConfigError(f"--engines: unknown engine(s) {', '.join(unknown)}; known: {', '.join(BACKEND_NAMES)}")
    precisions = list(args.precisions) + (["int8"] if args.int8 and "int8" not in args.precisions else [])
    bad = [p for p in precisions if p not in ("fp32", "fp16", "bf16", "int8")]
    if bad:
        raise ConfigError(f"--precisions: unknown precision(s) {', '.join(bad)}; known: fp32, fp16, bf16, int8")
    if args.calibration_samples is not None and args.calibration_samples < 2:
        raise ConfigError("--calibration_samples must be at least 2")
    if args.repeats < 1 or (args.tolerance is not None and not 0 <= args.tolerance <= 1):
        raise ConfigError("--repeats must be at least 1 and --tolerance between 0 and 1")
    report = tune(
        args.pipeline, args.input, args.output, args.tolerance, args.budget_s, args.engines, precisions,
        args.threads, args.batches, args.repeats, args.max_images, args.device, verify_output=not args.no_verify,
        calibration_samples=args.calibration_samples,
    )
    print(report.table())
    for key, cand in report.chosen.items():
        print(f"{key}: {cand.label()}")
    if report.output is not None:
        print(f"wrote {report.output} (use it with: hpinfer predict --pipeline {report.output} --input ...)")
    line = report.speed_line()
    if line is not None:
        print(line)
    elif report.verify_error is not None:
        print(f"verify step failed: {report.verify_error}")
    return 0
