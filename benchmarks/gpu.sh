#!/usr/bin/env bash
# ResNet-50 v1.5 on one GPU in under 10 minutes, written to one JSON: our trainer in fp16 +
# XLA at global batch 256 on synthetic data, the same on the real pipeline (photo-like JPEG
# TFRecords generated first, decoded every step), and the official resnet_ctl_imagenet_main
# trainer on the same batch. Targets: >= 2,500 images/s for ours on an H100/H200 (NVIDIA's
# TF ResNet-50 reaches about 2,400 on an A100) and >= 1.1x the official trainer.
#
#   benchmarks/gpu.sh                 # writes benchmarks/results_gpu.json
#   benchmarks/gpu.sh --dry_run       # the same items at tiny sizes on the CPU (about a minute),
#   DRY_RUN=1 benchmarks/gpu.sh       #   written to $OUTPUT (default: a temporary file) and checked
#
# Other flags pass through to `python -m benchmarks.train_step` (e.g. --items='train/*').
# Needs a TensorFlow that sees the GPU (`.venv/bin/pip install "tensorflow[and-cuda]==2.21.0"`)
# and, for the official item, the official code in .official (benchmarks/official.py); without
# it that item reports why instead of a figure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DRY_RUN=${DRY_RUN:-0}
args=()
for arg in "$@"; do
  if [ "$arg" = --dry_run ]; then DRY_RUN=1; else args+=("$arg"); fi
done
# Items of the gpu preset; spl* is 100 steps per call here, 2 in the dry run.
ITEMS='train/synthetic/fp16/xla/spl*,train/real/fp16/xla/spl*,official_train/synthetic/fp16/xla/spl*'

if [ "$DRY_RUN" = 1 ]; then
  OUTPUT=${OUTPUT:-$(mktemp -d)/results_gpu_dry_run.json}
  # The CPU stands in for the GPU; fp16 and XLA still compile the same steps.
  CUDA_VISIBLE_DEVICES='' "$PYTHON" -m benchmarks.train_step --preset=gpu --quick --items="$ITEMS" \
    --batch_size=2 --num_windows=1 --warmup_steps=1 --num_real_images=8 --item_timeout_s=300 \
    --output="$OUTPUT" ${args[@]+"${args[@]}"}
  "$PYTHON" - "$OUTPUT" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
names = [item["name"] for item in report["items"]]
assert len(names) == 3, names
for item in report["items"]:
  print(f"{item['name']}: {item.get('status')} {item.get('reason', '')}")
print(f"dry run: {sys.argv[1]} written with {len(names)} items")
EOF
  exit 0
fi

"$PYTHON" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices("GPU") else "No GPU visible to TensorFlow: check nvidia-smi and install tensorflow[and-cuda].")'
# 100 steps per call (about 10 s at the target): host overhead vanishes; the first call,
# XLA's compilation included, is the warm-up. Each item stops after 4 minutes at most.
exec "$PYTHON" -m benchmarks.train_step --preset=gpu --items="$ITEMS" \
  --batch_size=256 --long_steps_per_loop=100 --warmup_steps=100 \
  --num_windows=3 --window_seconds=10 --num_real_images=10000 --item_timeout_s=240 \
  --output="${OUTPUT:-benchmarks/results_gpu.json}" ${args[@]+"${args[@]}"}
