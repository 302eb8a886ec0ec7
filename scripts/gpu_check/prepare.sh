#!/usr/bin/env bash
# Builds, here (a machine with the Rust toolchain), everything the one GPU check needs, into
# .gpu-check/ (ignored by git): the CUDA test binaries, the ViT-on-the-device test, gpu_bench
# and the PyTorch peer script, stripped so that the folder travels within the device tool's
# 64 MiB. Then the GPU machine (no Rust, no network) runs scripts/gpu_check/run.sh on them:
#
#   bash scripts/gpu_check/prepare.sh
#   device run: command "bash scripts/gpu_check/run.sh", carry [".gpu-check"], timeout_s 420
#
# See README.md, "The GPU path".
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu-check
rm -rf "$out" && mkdir -p "$out"

# `cargo test --no-run` prints each test binary it built; keep the named ones.
built() { sed -n 's/.*Executable .*(\(target\/[^)]*\)).*/\1/p'; }
cargo test --release --no-run -p vit-autograd --features cuda --test cuda 2>&1 | tee /dev/stderr | built > "$out/.list"
cargo test --release --no-run -p vit-rs --features cuda --test gpu_train 2>&1 | tee /dev/stderr | built >> "$out/.list"
cargo build --release -p vit-autograd --features cuda --example gpu_bench
cargo build --release -p vit-rs --features cuda --example gpu_train_bench
for bin in $(cat "$out/.list") target/release/examples/gpu_bench target/release/examples/gpu_train_bench; do
  name=$(basename "$bin" | sed 's/-[0-9a-f]\{16\}$//')
  cp "$bin" "$out/$name"
  strip --strip-debug "$out/$name" 2>/dev/null || true
done
rm "$out/.list"
cp benches/peers/pytorch_vit_bench.py "$out/"
ls -l "$out"
du -sh "$out"
