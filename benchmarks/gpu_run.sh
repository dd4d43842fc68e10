#!/usr/bin/env bash
# Issue 5/6 runs on a lent GPU machine (the device tool), one call per group of steps:
#
#   bash benchmarks/gpu_run.sh tests aot      # GPU-only tests, AOTInductor build vs load (+ env); AOT_MODELS=name:precision,...
#   bash benchmarks/gpu_run.sh rec128         # rec 128x3x48x320 variants (compile modes, 1x1 convs as matmuls, ...)
#   bash benchmarks/gpu_run.sh serve          # serve_load.py with the torch engine: batching on vs off (SERVE_PAYLOADS=pages,
#                                             # SERVE_HPI, SERVE_TAG: a suffix for the output files,
#                                             # SERVE_PIPELINE=layout_parsing SERVE_ENDPOINT=/layout-parsing)
#   bash benchmarks/gpu_run.sh best           # recognition's arg-max on the GPU vs on the host (gpu_bench.py best)
#   bash benchmarks/gpu_run.sh queues         # the OCR pipeline's stage threads on vs off (gpu_bench.py queues)
#
# That machine has torch but not our other dependencies and cannot reach a package index: the wheels, model
# packages and sample images travel in .device_carry/torch6 (gitignored; name it in the call's `carry`).
# Logs and JSON go to $OUT. Every step has its own time limit so that one slow step cannot eat the call.
set -u -o pipefail
export PYTHONUNBUFFERED=1
CARRY=.device_carry/torch6
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/$CARRY/site:$PWD"
python3 -c "import cv2, numpy, onnx, onnxruntime, PIL, pypdfium2, pyclipper, yaml, tqdm, filelock, fastapi, uvicorn, httpx, torch" || exit 1
mkdir -p ../shared/data && ln -sfn "$PWD/$CARRY/images" ../shared/data/images
IMAGES=../shared/data/images
# cuDNN autotuning per new shape stalls a batching server for seconds (2026-11-26 run: p99 5 s); off for serving.
# Batches bring (width x batch bucket) shapes that one page at a time never sees: room for 512 graphs, not 64.
SERVE_HPI=${SERVE_HPI:-'{"auto_config": false, "backend": "torch", "backend_config": {"precision": "fp16", "torch": {"cudnn_benchmark": false, "max_graphs": 512}}}'}

for step in "$@"; do
  case $step in
    tests)
      timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_torch_engine.py -rs \
        -k "cuda_graphs_and or concurrent_callers or gpu_preprocessing or aot_ or run_best" 2>&1 | tee "$OUT/tests.log" ;;
    aot)
      timeout 420 python3 benchmarks/gpu_bench.py --out "$OUT/aot" --images $IMAGES --sections env,aot \
        ${AOT_MODELS:+--aot-models "$AOT_MODELS"} 2>&1 | tee "$OUT/aot.log" ;;
    rec128)
      timeout 570 python3 benchmarks/gpu_bench.py --out "$OUT/rec128" --images $IMAGES --sections env,rec128 \
        --variant-limit 200 2>&1 | tee "$OUT/rec128.log" ;;
    best)
      timeout 480 python3 benchmarks/gpu_bench.py --out "$OUT/best" --images $IMAGES --sections env,best 2>&1 | tee "$OUT/best.log" ;;
    queues)
      timeout 300 python3 benchmarks/gpu_bench.py --out "$OUT/queues" --images $IMAGES --sections env,queues 2>&1 | tee "$OUT/queues.log" ;;
    serve)
      P=${SERVE_PAYLOADS:-images}
      timeout ${SERVE_TIMEOUT:-560} python3 benchmarks/serve_load.py --device gpu:0 --use_hpip --hpi_config "$SERVE_HPI" \
        --pipeline ${SERVE_PIPELINE:-OCR} --endpoint ${SERVE_ENDPOINT:-/ocr} --payloads $P --requests ${SERVE_REQUESTS:-8:96,32:192} --rounds 3 --warm_up ${SERVE_WARM_UP:-192} ${SERVE_TWO_THREADS---two_threads_too} \
        --overhead_pairs 20 --json "$OUT/serve_load_gpu_$P${SERVE_TAG-}.json" 2>&1 | tee "$OUT/serve_$P${SERVE_TAG-}.log" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
