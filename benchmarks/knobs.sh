#!/usr/bin/env bash
# CPU speed knobs, one benchmark run per setting over the same items, so each
# setting's effect reads as the difference from `default`. XLA and steps_per_loop
# are items of the main run (python -m benchmarks.train_step) and not repeated here.
#
#   benchmarks/knobs.sh            # about 40 minutes on 2 cores; writes benchmarks/knobs/*.json
#   ITEMS='conv_ceiling/fp32,train/synthetic/fp32/spl10' benchmarks/knobs.sh
#
# Extra arguments pass through to every run (e.g. --num_windows=1 --rounds=3). The
# settings still run one after another, and this VM's speed drifts by about 10% over
# half an hour: read differences smaller than that as noise.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
ITEMS=${ITEMS:-conv_ceiling/fp32,conv_ceiling/bf16,train/synthetic/fp32/spl10,train/synthetic/bf16/spl10,keras_fit/synthetic/fp32}
mkdir -p benchmarks/knobs
run() {
  local name=$1; shift
  "$PYTHON" -m benchmarks.train_step --items="$ITEMS" --output="benchmarks/knobs/$name.json" "$@" \
    | tee "benchmarks/knobs/$name.txt"
}
run default "$@"
# Eigen kernels instead of oneDNN's.
run onednn_off --env=TF_ENABLE_ONEDNN_OPTS=0 "$@"
# One op at a time, each op on both cores: no two ops competing for the 2 cores.
run inter_op_1 --inter_op_threads=1 "$@"
# Two ops at a time, one core each.
run intra_op_1 --inter_op_threads=2 --intra_op_threads=1 "$@"
