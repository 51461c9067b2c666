#!/usr/bin/env bash
# GPU checks in one call, for a lent CUDA machine (see README "Kernels" and benchmarks/results/*-h200*):
#   1. the kernel tests with the Triton kernels compiled for the GPU (no interpreter);
#   2. the kernel benchmark (torch / triton / copy on the full sizes, torch.compile on the quick sizes);
#   3. the Module-1 iteration time at the official configuration (bench_speed.py --device cuda);
#   4. `augkd distill` (smoke preset) and `augkd export` on CUDA, end to end.
# Each step has its own time cap, so one slow step cannot eat the others. Everything it writes lands in
# $OUT/gpu-results.tgz (logs, CSV/JSON). Missing Python packages travel as wheels in .whl/ (built with
# `pip wheel --no-deps .` plus `pip download` of what the image lacks: pydantic, lightning-fabric, ...).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
set -u -o pipefail
REPO=$(pwd)
OUT=$(realpath -m "${OUT:-/tmp/gpu-out}")  # absolute: some steps run from /tmp
R=$OUT/r
mkdir -p "$R"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
step() { echo "=== $1 ($(date +%T))"; }
status() { local rc=$?; [ $rc -eq 0 ] || echo "!!! step failed or timed out: exit $rc"; }  # after each pipeline

step environment
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, triton, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'ort', o.__version__, o.get_available_providers())"
  python3 -c "import tensorrt" 2>&1 | tail -1; } 2>&1 | tee "$R/environment.txt"

step "kernel tests (compiled)"
(cd /tmp && AUGKD_TEST_DEVICE=cuda timeout 150 python3 -m pytest "$REPO/tests/kernels" -q -n 8 -p no:cacheprovider \
  --timeout 120 -o addopts="" 2>&1 | tee "$R/kernel-tests-cuda.log" | tail -6)
status

step "kernel benchmark"
timeout 140 python3 benchmarks/bench_kernels.py --device cuda --providers torch triton copy --out-dir "$R" 2>&1 \
  | tee "$R/bench-kernels.log" | tail -4
status
timeout 70 python3 benchmarks/bench_kernels.py --device cuda --providers compile --quick --append --out-dir "$R" 2>&1 \
  | tee -a "$R/bench-kernels.log" | tail -2
status

step "module-1 iteration time"
timeout 80 python3 benchmarks/bench_speed.py --device cuda --iters 20 --warmup 10 --out "$R/speed-module1-h200.json" \
  2>&1 | tee "$R/bench-speed.log" | tail -3
status

step "distill + export on cuda (smoke)"
(cd /tmp && timeout 80 python3 -m augkd distill -c "$REPO/configs/smoke.yaml" -o /tmp/smoke-cuda -q -s train.precision=auto 2>&1 \
  | tee "$R/distill-smoke.log" | tail -8)  # from /tmp: the source tree's augkd/ would shadow the installed one
status
(cd /tmp && timeout 50 python3 -m augkd export /tmp/smoke-cuda -o /tmp/smoke-cuda/export 2>&1 | tee "$R/export-smoke.log" | tail -12)
status
cp /tmp/smoke-cuda/summary.json /tmp/smoke-cuda/config.yaml "$R/" 2>/dev/null
cp /tmp/smoke-cuda/export/export_report.* "$R/" 2>/dev/null

step done
tar czf "$OUT/gpu-results.tgz" -C "$OUT" r && ls -la "$R"
