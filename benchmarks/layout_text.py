"""layout_parsing's text on multi-page rendered PDFs with known text, against the OCR pipeline on the same pages.

    python benchmarks/layout_text.py [--layout layout_parsing] [--ocr OCR_PP-OCRv5_mobile] [--json out.json]

The OCR pipeline runs with the recogniser layout_parsing uses and without the line orientation classifier, as
layout_parsing does, so the difference is what layout_parsing loses or adds, not a model's.

Three PDFs from heldout.py's pages (written at 144 dpi, so PDFium's 2x rendering gives back the pixels the
truth was drawn at): English in one column (three fonts), English in two columns and mixed fonts, Chinese
and mixed Chinese/English. Per PDF:

- layout_parsing's document CER: its blocks' text in its reading order against the pages' paragraphs in
  theirs (whitespace removed; order counts, so text read in the wrong order is an error);
- the OCR pipeline's CER on the same pages (order-free line matching: heldout.line_errors);
- layout_parsing's WER with spaces kept (English PDFs), and paragraphs found vs on the pages.

Targets (issue 22): document CER within 0.5 points of OCR's, WER <= 5 % on clean English pages, paragraph
count within 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402

IMAGE_LABELS = {"figure", "table", "equation"}


def documents() -> Dict[str, List[heldout.Sample]]:
    rng = random.Random(22)
    fonts = heldout.available_latin_fonts()

    def page(i: int, **spec: Any) -> heldout.Sample:
        return heldout.page(rng, f"p{i}", **spec)

    return {
        "en_one_column": [page(i, lang="en", columns=1, style=("spaced", "indented")[i % 2], font_name=fonts[i % 3 * 2 % len(fonts)],
                               size=22 + 2 * i, paragraphs=12) for i in range(3)],
        "en_two_columns": [page(i, lang="en", columns=2, style=("indented", "spaced")[i % 2], font_name=fonts[(i + 1) % len(fonts)],
                                size=20 + 2 * i, paragraphs=14) for i in range(3)],
        "zh_mixed": [page(0, lang="zh", columns=1, style="indented", font_name="cjk", size=24, paragraphs=8),
                     page(1, lang="mixed", columns=1, style="spaced", font_name="cjk", size=22, paragraphs=9),
                     page(2, lang="zh", columns=2, style="spaced", font_name="cjk", size=22, paragraphs=10)],
    }


def compared_pipelines(description: str) -> Tuple[argparse.Namespace, Any, Any]:
    """The command line (--layout, --ocr, --json) and the two pipelines it names; the OCR pipeline without the
    line orientation classifier, as layout_parsing runs it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--layout", default="layout_parsing")
    parser.add_argument("--ocr", default="OCR_PP-OCRv5_mobile")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import hpinfer

    return args, hpinfer.create_pipeline(args.layout), hpinfer.create_pipeline(args.ocr, use_textline_orientation=False)


def timed(pipeline: Any, pdf: Path) -> Tuple[List[Any], float]:
    """The pipeline's results for every page of ``pdf``, and the seconds they took."""
    start = time.perf_counter()
    results = pipeline.predict(str(pdf))
    return results, time.perf_counter() - start


def main() -> int:
    args, layout, ocr = compared_pipelines(__doc__.splitlines()[0])
    report: Dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(),
                              "layout": args.layout, "ocr": args.ocr, "documents": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, pages in documents().items():
            pdf = heldout.write_pdf(Path(tmp) / f"{name}.pdf", [p.image for p in pages])
            results, layout_s = timed(layout, pdf)
            plain, ocr_s = timed(ocr, pdf)
            found, truth, ocr_errors, ocr_chars, paragraphs_found, paragraphs_true = [], [], 0, 0, 0, 0
            for sample, res, flat in zip(pages, results, plain):
                paras = [p for b in res["blocks"] if b["label"] not in IMAGE_LABELS for p in b["text"].split("\n") if p.strip()]
                found += paras
                truth += sample.paragraphs
                paragraphs_found += len(paras)
                paragraphs_true += len(sample.paragraphs)
                errors, chars = heldout.line_errors(sample.truth()["lines"], flat["rec_texts"], flat["rec_boxes"].tolist())
                ocr_errors += errors
                ocr_chars += chars
            row = {
                "pages": len(pages),
                "layout_cer": round(heldout.cer(" ".join(truth), " ".join(found)), 5),
                "ocr_cer": round(ocr_errors / max(1, ocr_chars), 5),
                "layout_wer": round(heldout.wer(" ".join(truth), " ".join(found)), 4) if name.startswith("en") else None,
                "paragraphs_found": paragraphs_found, "paragraphs_true": paragraphs_true,
                "layout_s_per_page": round(layout_s / len(pages), 2), "ocr_s_per_page": round(ocr_s / len(pages), 2),
            }
            report["documents"][name] = row
            print(name, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
