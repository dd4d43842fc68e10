"""Does hpinfer's ``paddlex`` profile give PaddleX 3.7.2's OCR results on the same weights?

    python benchmarks/paddlex_fidelity.py [--images DIR] [--cls on|off] [--opencv paddlex|ours] [--json out.json]

PaddleX runs in its own venv (``$PADDLEX_PYTHON``, see compare_peers.py) through ``paddlex_worker.py`` (best CPU
configuration), on PaddleX model directories of the PP-OCRv4 weights (``paddlex_dirs.py``). hpinfer runs PaddleX's
own ``OCR.yaml`` from that venv, changed only as the worker changes it (document preprocessor off, those model
directories) — so hpinfer reads it as a PaddleX file and uses the ``paddlex`` profile. Both get the same decoded
pixels. Per image: whether the lines (texts, in order) are equal and the largest box-corner difference in pixels.

``--opencv paddlex`` (the default) runs hpinfer on PaddleX's own OpenCV build (4.10 from paddleocr's
opencv-contrib-python; ours is 5.0): the script runs itself again with that venv's ``cv2`` package first on
``PYTHONPATH`` (linked, nothing installed), since the two versions' cubic ``warpPerspective`` crops differ by a few
grey levels, which changes a few recognised characters. ``--opencv ours``: hpinfer's own OpenCV.

With the line classifier on, the line angles are compared too, as they are and as PaddleX 3.7.2's pipeline turns
them (``batch_verdicts``): its textline-orientation results each carry the whole batch's ``class_ids`` and the OCR
pipeline reads the first, so every line of a batch of ``batch_size`` (6) gets the first line's verdict. hpinfer
does not copy that: it turns lines its classifier finds upside down, as PaddleX's module does line by line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_peers import DEFAULT_IMAGES, PADDLEX_PYTHON  # noqa: E402
from paddlex_dirs import write_dirs  # noqa: E402


def paddlex_yaml(dirs: Path, cls: bool, out: Path) -> Path:
    source = subprocess.run(
        [str(PADDLEX_PYTHON), "-c", "import paddlex, os; print(os.path.join(os.path.dirname(paddlex.__file__), 'configs/pipelines/OCR.yaml'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    data["use_doc_preprocessor"] = False
    data["use_textline_orientation"] = cls
    for key, name in {"TextDetection": "PP-OCRv4_mobile_det", "TextRecognition": "PP-OCRv4_mobile_rec",
                      "TextLineOrientation": "PP-LCNet_x0_25_textline_ori"}.items():
        data["SubModules"][key].update(model_name=name, model_dir=str(dirs / name))
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def batch_verdicts(angles, batch_size: int = 6):
    """Each line's angle as PaddleX 3.7.2's OCR pipeline applies it: the first line's of its batch."""
    return [angles[i - i % batch_size] for i in range(len(angles))]


def paddlex_opencv(work: Path) -> Path:
    """A folder holding links to PaddleX's venv's ``cv2`` package (and its bundled libraries), to put first on
    ``PYTHONPATH``."""
    site = Path(subprocess.run([str(PADDLEX_PYTHON), "-c", "import cv2, os; print(os.path.dirname(os.path.dirname(cv2.__file__)))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for entry in [site / "cv2", *site.glob("opencv*.libs")]:
        (work / entry.name).symlink_to(entry)
    return work


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--cls", choices=["on", "off"], default="on")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--backend", help="hpinfer's engine (e.g. paddle: Paddle Inference, as PaddleX; default: standard inference)")
    parser.add_argument("--opencv", choices=["paddlex", "ours"], default="paddlex",
                        help="whose OpenCV hpinfer crops with (default: PaddleX's, linked from its venv)")
    args = parser.parse_args(argv)
    import cv2

    if args.opencv == "paddlex" and not os.environ.get("HPINFER_FIDELITY_OPENCV"):
        with tempfile.TemporaryDirectory(prefix="hpinfer-fidelity-cv2-") as links:
            path = os.pathsep.join(p for p in (str(paddlex_opencv(Path(links))), os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYTHONPATH": path, "HPINFER_FIDELITY_OPENCV": "1"}
            return subprocess.run([sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], env=env).returncode
    import hpinfer
    from hpinfer.io import iter_inputs

    with tempfile.TemporaryDirectory(prefix="hpinfer-fidelity-") as work:
        work = Path(work)
        dirs = next(iter(write_dirs(work / "models").values())).parent
        images = [(Path(item.input_path).name, item.image) for item in iter_inputs(str(args.images))]
        paths = []
        for index, (_, image) in enumerate(images):
            np.save(work / f"{index}.npy", image)
            paths.append(str(work / f"{index}.npy"))
        worker = subprocess.Popen(
            [str(PADDLEX_PYTHON), str(Path(__file__).with_name("paddlex_worker.py")), "--dirs", str(dirs), "--cls", args.cls,
             "--images", *paths], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        ready = json.loads(worker.stdout.readline())
        if "error" in ready:
            raise SystemExit(f"PaddleX failed: {ready['error']}")
        pipeline = hpinfer.create_pipeline(str(paddlex_yaml(dirs, args.cls == "on", work / "OCR.yaml")),
                                           hpi_config={"backend": args.backend} if args.backend else None)
        rows = []
        for index, (name, image) in enumerate(images):
            worker.stdin.write(f"{index}\n")
            worker.stdin.flush()
            theirs = json.loads(worker.stdout.readline())
            ours = pipeline.predict(image)[0]
            our_boxes = [[[int(x), int(y)] for x, y in poly] for poly in ours["rec_polys"]]
            same_count = len(our_boxes) == len(theirs["boxes"])
            box_diff = int(np.abs(np.array(our_boxes) - np.array(theirs["boxes"])).max()) if same_count and our_boxes else (0 if same_count else None)
            rows.append({"image": name, "texts_equal": list(ours["rec_texts"]) == theirs["texts"], "lines": [len(our_boxes), len(theirs["boxes"])],
                         "max_box_diff_px": box_diff, "ours": list(ours["rec_texts"]), "paddlex": theirs["texts"],
                         "paddlex_boxes": theirs["boxes"]})
            angles = ""
            if args.cls == "on":  # ours: 0 or 180; PaddleX: 0 or 1
                ours_angles = [a // 180 for a in ours["textline_orientation_angles"]]
                rows[-1].update(angles_ours=ours_angles, angles_paddlex=theirs["angles"],
                                angles_equal=ours_angles == theirs["angles"],
                                angles_equal_as_paddlex_batches=batch_verdicts(ours_angles) == theirs["angles"])
                angles = (f"  angles {'equal' if rows[-1]['angles_equal'] else 'DIFFER'}"
                          f" ({'equal' if rows[-1]['angles_equal_as_paddlex_batches'] else 'differ'} as PaddleX batches them)")
            print(f"{name:22s} texts {'equal' if rows[-1]['texts_equal'] else 'DIFFER'}  lines ours/paddlex {len(our_boxes)}/{len(theirs['boxes'])}  "
                  f"max box diff {box_diff} px{angles}")
        worker.stdin.close()
        worker.wait(timeout=60)
        pipeline.close()
    equal = sum(r["texts_equal"] and r["max_box_diff_px"] is not None and r["max_box_diff_px"] <= 2 for r in rows)
    print(f"{equal} of {len(rows)} images: same lines and boxes within 2 px (classifier {args.cls}, hpinfer engine "
          f"{args.backend or 'standard'}, hpinfer on OpenCV {cv2.__version__} from {args.opencv})")
    if args.json:
        args.json.write_text(json.dumps({"cls": args.cls, "backend": args.backend, "opencv": [args.opencv, cv2.__version__], "rows": rows}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
