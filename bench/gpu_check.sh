#!/usr/bin/env bash
# One prepared check of the GPU path, under 8 minutes on one GPU:
#   bash bench/gpu_check.sh                  # CUDA: tests, train_speed at B = 256, 1024, 4096 (and
#                                            # double-buffered at 1024, 4096), kernel
#   bash bench/gpu_check.sh --device cpu     # the same steps at a CI-small size (tests/test_gpu_check.py)
#   bash bench/gpu_check.sh --out DIR        # JSON elsewhere (default bench/results)
# Steps, each under its own time limit so that one that hangs cannot take the others' time:
#   1. the CUDA tests (kernels, training and resume on CUDA); with --device cpu the normal suite
#      runs these tests, so the step is left out;
#   2. bench/train_speed.py for the baseline and each influence model (influence, moa, comm; the
#      *-baseline twins cost the same) at each batch size;
#   3. the same with double_buffer on, at the large batch sizes (the env steps one half of the
#      batch on the CPU while the GPU acts on the other);
#   4. bench/influence_kernel.py on the device.
# Writes DIR/gpu_check_train_speed.json, DIR/gpu_check_double_buffer.json (rows are written as
# they finish: a step cut off by its limit keeps what it measured), DIR/gpu_check_influence_kernel.json
# and DIR/gpu_check.json (device, versions, each step's exit status and seconds); exits 1 if a
# step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
OUT=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="${2:-}"; shift 2 ;;
    --out) OUT="${2:-}"; shift 2 ;;
    *) echo "usage: bash bench/gpu_check.sh [--device cuda|cpu] [--out DIR]" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  cuda) SIZES=256,1024,4096; LARGE=1024,4096; ROLLOUT=128; UPDATES=2; KERNEL_ENVS=1024; REPEATS=20
        TEST_LIMIT=110; SPEED_LIMIT=200; BUFFER_LIMIT=120 ;;
  cpu) SIZES=4; LARGE=4; ROLLOUT=8; UPDATES=1; KERNEL_ENVS=4; REPEATS=2; TEST_LIMIT=0; SPEED_LIMIT=240
       BUFFER_LIMIT=240 ;;
  *) echo "--device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
if [ "$DEVICE" = cuda ] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "CUDA is not available: run with --device cpu for the CI-small check" >&2
  exit 2
fi
mkdir -p "$OUT"
STEPS=()

run_step() {  # name, time limit in seconds, command...
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@"
  local status=$?
  STEPS+=("{\"step\": \"$name\", \"status\": $status, \"seconds\": $((SECONDS - start))}")
  echo "== $name: exit $status after $((SECONDS - start))s"
}

if [ "$DEVICE" = cuda ]; then
  run_step tests "$TEST_LIMIT" python -m pytest -q -x -k "cuda or kernel or Kernel" tests/test_kernels.py tests/test_train.py \
    tests/test_influence.py
fi
run_step train_speed "$SPEED_LIMIT" python bench/train_speed.py --models baseline,influence,moa,comm \
  --num-envs "$SIZES" --rollout "$ROLLOUT" --updates "$UPDATES" --device "$DEVICE" \
  --out "$OUT/gpu_check_train_speed.json"
run_step double_buffer "$BUFFER_LIMIT" python bench/train_speed.py --models baseline,influence,moa,comm \
  --num-envs "$LARGE" --rollout "$ROLLOUT" --updates "$UPDATES" --device "$DEVICE" --double-buffer on \
  --out "$OUT/gpu_check_double_buffer.json"
run_step influence_kernel 45 python bench/influence_kernel.py --device "$DEVICE" --envs "$KERNEL_ENVS" \
  --repeats "$REPEATS" --out "$OUT/gpu_check_influence_kernel.json"

STEPS_JSON=$(IFS=,; echo "[${STEPS[*]}]")
python - "$OUT/gpu_check.json" "$DEVICE" "$STEPS_JSON" <<'PY'
import json, os, sys
import torch
path, device, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
summary = {"device": device, "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
           "torch": str(torch.__version__), "cores": len(os.sched_getaffinity(0)), "steps": steps,
           "ok": all(step["status"] == 0 for step in steps)}
with open(path, "w") as handle:
    json.dump(summary, handle, indent=2)
print(f"wrote {path}: {'every step passed' if summary['ok'] else 'a step failed'}")
sys.exit(0 if summary["ok"] else 1)
PY
