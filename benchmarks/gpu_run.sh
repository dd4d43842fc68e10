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
#   bash benchmarks/gpu_run.sh instances      # issue 17: gpu_serve.py, basic serving with --instances N on one GPU: OCR
#                                             # single images at concurrency 64 (INSTANCES=1,4,8), batching on vs off at 8
#                                             # (BATCHING_INSTANCES); MPS=1 runs them under NVIDIA's Multi-Process Service
#   bash benchmarks/gpu_run.sh instances_layout  # the same for layout_parsing, A4 pages at concurrency 32 (LAYOUT_INSTANCES)
#   bash benchmarks/gpu_run.sh serve          # serve_load.py with the torch engine: batching on vs off (SERVE_PAYLOADS=pages,
#                                             # SERVE_HPI, SERVE_TAG: a suffix for the output files,
#                                             # SERVE_PIPELINE=layout_parsing SERVE_ENDPOINT=/layout-parsing)
#
# The sections of the retired benchmarks/gpu_bench.py (aot, rec128, best, queues: questions answered in RESULTS.md)
# are at commit a108744 (git show a108744:benchmarks/gpu_bench.py).
#
# That machine has torch but not our other dependencies and cannot reach a package index: the wheels, model
# files and sample images travel in .device_carry/torch6 (gitignored; name it in the call's `carry`), made here by
# `bash benchmarks/gpu_carry.sh ocr` (steps tests, serve, instances, issue16 with ISSUE16_PIPELINES=OCR) or
# `... layout` (instances_layout); both do not fit in one call.
# Logs and JSON go to $OUT. Every step has its own time limit so that one slow step cannot eat the call.
set -u -o pipefail
export PYTHONUNBUFFERED=1
CARRY=.device_carry/torch6
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/$CARRY/site:$PWD"
python3 -c "import cv2, numpy, onnx, onnxruntime, PIL, pypdfium2, pyclipper, yaml, tqdm, filelock, fastapi, uvicorn, httpx, torch" || exit 1
mkdir -p ../shared/data && ln -sfn "$PWD/$CARRY/images" ../shared/data/images
IMAGES=../shared/data/images
# layout_parsing without table recognition: SLANet's decoder is an ONNX Loop, which the torch engine does not
# translate (and its file would not fit in the 64 MiB a call carries); the composed pages hold no tables.
python3 - <<'EOF' || exit 1
import yaml
config = yaml.safe_load(open("hpinfer/pipelines/configs/layout_parsing.yaml"))
config["use_table_recognition"] = False
del config["SubModules"]["TableStructureRecognition"]
yaml.safe_dump(config, open("/tmp/layout_parsing.yaml", "w"), sort_keys=False)
EOF
DEVICE=${DEVICE:-gpu:0}
# fp32 (texts identical to the CPU), cuDNN autotuning on: each instance sees its inputs' few shapes once.
INSTANCE_HPI=${INSTANCE_HPI:-'{"auto_config": false, "backend": "torch", "backend_config": {"precision": "fp32", "torch": {"max_graphs": 512}}}'}
# cuDNN autotuning per new shape stalls a batching server for seconds (2026-11-26 run: p99 5 s); off for serving.
# Batches bring (width x batch bucket) shapes that one page at a time never sees: room for 512 graphs, not 64.
SERVE_HPI=${SERVE_HPI:-'{"auto_config": false, "backend": "torch", "backend_config": {"precision": "fp16", "torch": {"cudnn_benchmark": false, "max_graphs": 512}}}'}

# MPS=1: NVIDIA's Multi-Process Service, so that the kernels of several instances (processes) run at once
# instead of taking turns in time slices.
if [ "${MPS:-0}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  if nvidia-cuda-mps-control -d && timeout 60 python3 -c "import torch; torch.ones(1).cuda().sum().item()"; then
    echo "MPS on"
    trap 'echo quit | nvidia-cuda-mps-control' EXIT
  else  # a daemon that does not serve would fail every server: go on without it
    echo "MPS could not be used: going on without it"
    echo quit | nvidia-cuda-mps-control 2>/dev/null
  fi
fi

for step in "$@"; do
  case $step in
    tests)
      timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_torch_engine.py tests/test_torch_buckets.py \
        tests/test_tensorrt_engine.py -rs 2>&1 | tee "$OUT/tests.log" ;;
    issue16)
      B=${ISSUE16_BUDGET:-540}
      timeout $((B + 30)) python3 benchmarks/gpu_pipelines.py --out "$OUT/issue16" --images $IMAGES --device $DEVICE \
        --budget "$B" --pipelines "${ISSUE16_PIPELINES:-OCR,layout_parsing}" \
        --configs "${ISSUE16_CONFIGS:-fp32,fp32-buckets,fp16-buckets}" 2>&1 | tee "$OUT/issue16.log" ;;
    instances)
      timeout ${OCR_TIMEOUT:-330} python3 benchmarks/gpu_serve.py --out "$OUT" --device $DEVICE --hpi_config "$INSTANCE_HPI" \
        --instances ${INSTANCES:-1,4,8} --concurrency 64 --count ${OCR_COUNT:-1280} --warm_up ${OCR_WARM_UP:-256} \
        --batching ${BATCHING_INSTANCES:-4} --rounds ${BATCHING_ROUNDS:-3} --budget ${OCR_BUDGET:-240} \
        ${SERVER_ARGS:+--server_args "$SERVER_ARGS"} 2>&1 | tee "$OUT/instances_ocr.log" ;;
    instances_layout)
      timeout ${LAYOUT_TIMEOUT:-240} python3 benchmarks/gpu_serve.py --out "$OUT" --device $DEVICE --hpi_config "$INSTANCE_HPI" \
        --pipeline /tmp/layout_parsing.yaml --endpoint /layout-parsing --payloads pages --tag layout_parsing_pages \
        --instances ${LAYOUT_INSTANCES:-4,8} --concurrency 32 --count ${LAYOUT_COUNT:-320} --warm_up ${LAYOUT_WARM_UP:-64} \
        --budget ${LAYOUT_BUDGET:-150} ${SERVER_ARGS:+--server_args "$SERVER_ARGS"} 2>&1 | tee "$OUT/instances_layout.log" ;;
    serve)
      P=${SERVE_PAYLOADS:-images}
      timeout ${SERVE_TIMEOUT:-560} python3 benchmarks/serve_load.py --device $DEVICE --use_hpip --hpi_config "$SERVE_HPI" \
        --pipeline ${SERVE_PIPELINE:-OCR} --endpoint ${SERVE_ENDPOINT:-/ocr} --payloads $P --requests ${SERVE_REQUESTS:-8:96,32:192} --rounds 3 --warm_up ${SERVE_WARM_UP:-192} ${SERVE_TWO_THREADS---two_threads_too} \
        --overhead_pairs 20 --json "$OUT/serve_load_gpu_$P${SERVE_TAG-}.json" 2>&1 | tee "$OUT/serve_$P${SERVE_TAG-}.log" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
