"""CER, WER and speed of each bundled OCR pipeline on the held-out set (heldout.py), to choose the defaults.

    python benchmarks/ocr_models.py [--pipelines OCR_PP-OCRv4_mobile,OCR_PP-OCRv5_mobile,...] [--page-step 3]
                                    [--hpip] [--cls-modes squeeze,tiles] [--profiles rapidocr,paddlex]
                                    [--json out.json]

Every pipeline reads every sample (fp32, its own bundled settings; the OpenVINO engine with ``--hpip``) after
one warm-up image; samples are timed one by one and pipelines take turns sample by sample, so load on a shared
machine hits them alike. Per pipeline and kind of sample: CER (order-free line matching, whitespace removed,
heldout.line_errors), WER (words, spaces kept: the same matching, a line's pieces joined by a space), and
images per second. ``--cls-modes`` runs each pipeline once per line-classifier mode (``long_lines`` of
tasks/textline_orientation.py), named ``<pipeline>+<mode>``. ``--profiles`` runs each once per OCR profile
(rapidocr, paddlex), named ``<pipeline> (profile <p>)``; a pipeline may be a YAML path (PaddleX's own included).
The rule (RESULTS.md) picks the default from these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402

PIPELINES = ["OCR_PP-OCRv4_mobile", "OCR_PP-OCRv5_mobile", "OCR_PP-OCRv6_small", "OCR_PP-OCRv6_tiny"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--hpip", action="store_true", help="use_hpip with the OpenVINO engine, fp32")
    parser.add_argument("--page-step", type=int, default=1, help="every n-th page of the set only (pages are slow)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a pipeline option for every pipeline, e.g. use_textline_orientation=False")
    parser.add_argument("--cls-modes", default="", help="e.g. squeeze,tiles: each pipeline once per line-classifier mode")
    parser.add_argument("--profiles", help="comma-separated OCR profiles: each pipeline once per profile")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import hpinfer

    samples = heldout.samples()
    pages = [s for s in samples if s.kind.startswith("page")]
    samples = pages[:: args.page_step] + [s for s in samples if not s.kind.startswith("page")]
    names = args.pipelines.split(",")
    sources: Dict[str, Any] = {name: name for name in names}
    if args.cls_modes:
        from hpinfer.pipelines.config import load_pipeline_file

        folder = Path(tempfile.mkdtemp(prefix="ocr_models_"))
        sources = {}
        for name in names:
            for mode in args.cls_modes.split(","):
                data, _ = load_pipeline_file(name)
                data["SubModules"]["TextLineOrientation"]["long_lines"] = mode
                sources[f"{name}+{mode}"] = folder / f"{name}+{mode}.yaml"
                sources[f"{name}+{mode}"].write_text(yaml.safe_dump(data))
        names = list(sources)
    options: Dict[str, Any] = {}
    if args.hpip:
        options = {"use_hpip": True, "hpi_config": {"backend": "openvino", "backend_config": {"precision": "fp32"}}}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = {"true": True, "false": False}.get(value.lower(), value)
    profiles = args.profiles.split(",") if args.profiles else [None]
    pipes = {
        name if profile is None else f"{name} (profile {profile})":
            hpinfer.create_pipeline(sources[name], **options, **({} if profile is None else {"profile": profile}))
        for name in names for profile in profiles
    }
    names = list(pipes)
    for pipe in pipes.values():
        pipe.predict(samples[-1].image)  # warm-up
    totals: Dict[str, Dict[str, List[float]]] = {n: defaultdict(lambda: [0, 0, 0, 0, 0.0, 0]) for n in names}
    for sample in samples:
        truth = sample.truth()["lines"]
        for name, pipe in pipes.items():
            start = time.perf_counter()
            (res,) = pipe.predict(sample.image)
            seconds = time.perf_counter() - start
            boxes = [list(b) for b in res["rec_boxes"]]
            cerr, chars = heldout.line_errors(truth, res["rec_texts"], boxes)
            werr, words = heldout.word_errors(truth, res["rec_texts"], boxes)
            for key in (sample.kind, "all"):
                row = totals[name][key]
                row[0] += cerr; row[1] += chars; row[2] += werr; row[3] += words; row[4] += seconds; row[5] += 1
        print(f"{sample.name} done", file=sys.stderr, flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(), "hpip": args.hpip, "page_step": args.page_step, "options": args.option,
        "cls_modes": args.cls_modes, "profiles": profiles,
        "samples": len(samples), "versions": {"hpinfer": hpinfer.__version__},
        "results": {
            name: {kind: {"cer": round(r[0] / max(1, r[1]), 5), "wer": round(r[2] / max(1, r[3]), 4),
                          "images_per_s": round(r[5] / r[4], 3), "images": r[5]} for kind, r in rows.items()}
            for name, rows in totals.items()
        },
    }
    kinds = sorted(next(iter(report["results"].values())).keys())
    print(f"| pipeline | {' | '.join(kinds)} |")
    print("| --- |" + " ---: |" * len(kinds))
    for name, rows in report["results"].items():
        cells = [f"{rows[k]['cer'] * 100:.2f} % / {rows[k]['wer'] * 100:.1f} % / {rows[k]['images_per_s']:.2f}" for k in kinds]
        print(f"| {name} | {' | '.join(cells)} |")
    print("(CER / WER / images per second)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
