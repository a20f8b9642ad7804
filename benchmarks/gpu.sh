#!/usr/bin/env bash
# ResNet-50 on one GPU: mixed precision + XLA at global batch 256, beside fp32 and the
# GPU's conv/matmul ceilings. Target: >= 2,500 images/s for train/synthetic/fp16/xla/spl100
# on an H100 (NVIDIA's TF1 example reports 2,375 on an A100).
#
#   benchmarks/gpu.sh                      # all GPU items, about 15 minutes on an H100
#   benchmarks/gpu.sh --items='train/synthetic/*'
#
# Any flag of `python -m benchmarks.train_step` passes through. Needs a TensorFlow
# that sees the GPU: `.venv/bin/pip install "tensorflow[and-cuda]==2.21.0"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices("GPU") else "No GPU visible to TensorFlow: check nvidia-smi and install tensorflow[and-cuda].")'
# 100 steps per call: at ~0.1 s per step a call is long enough that host overhead vanishes.
exec "$PYTHON" -m benchmarks.train_step --preset=gpu \
  --batch_size=256 --long_steps_per_loop=100 --warmup_steps=100 \
  --num_windows=5 --window_seconds=10 \
  --conv_shape=256,56,56,256,256 --matmul_size=8192 --num_real_images=20000 \
  --output="${OUTPUT:-benchmarks/results_gpu.json}" "$@"
