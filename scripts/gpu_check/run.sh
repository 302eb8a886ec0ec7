#!/usr/bin/env bash
# The one GPU check, run on the GPU machine by the device tool on what prepare.sh built (see
# there and README.md, "The GPU path"). In order, each step's output also in $OUT/gpu-check.log:
#   1. the CUDA tests on the GPU (every primitive and op against the CPU, f64 gradchecks);
#   2. a ViT's training steps and checkpoints on the GPU against the CPU, and a one-rank NCCL
#      run against the plain GPU run (tests/gpu_train.rs; libnccl from the same wheels);
#   3. gpu_train_bench: the whole ViT-Ti/4 training step and inference, images/s at batch 128
#      and 512 and peak device memory, then the PyTorch eager peer on the same GPU and batches
#      (the issue's target: at least PyTorch eager's training images/s at batch 512), then
#      gpu_bench (one encoder block of unfused ops, GPU beside CPU).
# The emulator runs of the tests are left out (they run in CI): this is the GPU's time.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=.gpu-check
log="${OUT:-/tmp}/gpu-check.log"
: > "$log"
say() { echo "== $(date -u +%T) $*" | tee -a "$log"; }
run() { say "$*"; "$@" 2>&1 | tee -a "$log"; local rc=${PIPESTATUS[0]}; say "exit $rc"; return 0; }

# cuBLAS, NVRTC and NCCL from the Python environment's NVIDIA wheels (the driver is the system's).
libs=$(python3 - <<'PY'
import glob, os, sys
dirs = set()
for p in sys.path:
    for lib in glob.glob(os.path.join(p, "nvidia", "*", "lib", "lib*.so*")):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
say "library path: $LD_LIBRARY_PATH"
export AUTOGRAD_CUDA_EMULATOR=0 PROPTEST_CASES="${PROPTEST_CASES:-16}" PYTHONUNBUFFERED=1
# Each step's limit (seconds) keeps the whole under 6 minutes: a rerun fits in the 15.
run timeout 100 "$bin/cuda"
run timeout 40 "$bin/gpu_train" --test-threads 1 --nocapture
run timeout 60 "$bin/gpu_train_bench" --batch 128 --batch 512
for b in 128 512; do
  run timeout 50 python3 "$bin/pytorch_vit_bench.py" --device cuda --batch "$b" --threads 1 \
    --configs vit_tiny_cifar:train,vit_tiny_cifar:infer
done
run timeout 30 "$bin/gpu_bench" --batch 128 --batch 512
say "done"
