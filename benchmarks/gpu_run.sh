#!/usr/bin/env bash
# Runs on a lent GPU machine (the device tool), one call per group of steps:
#
#   bash benchmarks/gpu_run.sh tests          # the GPU-only tests (torch, TensorRT where installed)
#   bash benchmarks/gpu_run.sh issue16        # issue 16's figures in one call: benchmarks/gpu_pipelines.py (OCR and
#                                             # layout_parsing per s, cold/warm start, p50/p99 incl. unseen sizes,
#                                             # texts vs the CPU, the CPU's best layout); ISSUE16_BUDGET seconds (540),
#                                             # ISSUE16_PIPELINES=OCR (or layout_parsing) and ISSUE16_CONFIGS=fp32
#                                             # (fp32-buckets, fp16-buckets) split it over calls: a cold fp32 start
#                                             # with cuDNN autotuning took 246 s in the issue's run
#   bash benchmarks/gpu_run.sh serve          # serve_load.py with the torch engine: batching on vs off (SERVE_PAYLOADS=pages,
#                                             # SERVE_HPI, SERVE_TAG: a suffix for the output files,
#                                             # SERVE_PIPELINE=layout_parsing SERVE_ENDPOINT=/layout-parsing)
#
# The sections of the retired benchmarks/gpu_bench.py (aot, rec128, best, queues: questions answered in RESULTS.md)
# are at commit a108744 (git show a108744:benchmarks/gpu_bench.py).
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
      timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_torch_engine.py tests/test_torch_buckets.py \
        tests/test_tensorrt_engine.py -rs 2>&1 | tee "$OUT/tests.log" ;;
    issue16)
      B=${ISSUE16_BUDGET:-540}
      timeout $((B + 30)) python3 benchmarks/gpu_pipelines.py --out "$OUT/issue16" --images $IMAGES --device gpu:0 \
        --budget "$B" --pipelines "${ISSUE16_PIPELINES:-OCR,layout_parsing}" \
        --configs "${ISSUE16_CONFIGS:-fp32,fp32-buckets,fp16-buckets}" 2>&1 | tee "$OUT/issue16.log" ;;
    serve)
      P=${SERVE_PAYLOADS:-images}
      timeout ${SERVE_TIMEOUT:-560} python3 benchmarks/serve_load.py --device gpu:0 --use_hpip --hpi_config "$SERVE_HPI" \
        --pipeline ${SERVE_PIPELINE:-OCR} --endpoint ${SERVE_ENDPOINT:-/ocr} --payloads $P --requests ${SERVE_REQUESTS:-8:96,32:192} --rounds 3 --warm_up ${SERVE_WARM_UP:-192} ${SERVE_TWO_THREADS---two_threads_too} \
        --overhead_pairs 20 --json "$OUT/serve_load_gpu_$P${SERVE_TAG-}.json" 2>&1 | tee "$OUT/serve_$P${SERVE_TAG-}.log" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
