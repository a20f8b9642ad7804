"""Where the train step's time goes, by TF op type: the breakdown quoted in benchmarks/README.md.

    python -m benchmarks.op_profile --precision=fp32 --steps=2
    python -m benchmarks.op_profile --quick        # tiny sizes, seconds

Builds the benchmark's `train/synthetic/<precision>` item (our trainer's
train function on one cached synthetic batch), runs it once to warm up, then
profiles `--steps` steps with `tf.profiler` and prints each op type's share
of the busy time (self time, idle time left out) and its milliseconds per
step, then the convolutions' achieved GFLOP/s (3 x the forward FLOPs of every
Conv2D over the time of all convolution ops, forward and both gradients).

The TF runtime runs independent ops side by side on its inter-op threads,
and then each op's time counts the other's share of the cores; so the
profile runs ops one at a time (`--inter_op_threads=1`, the default here),
and the op times add up to the step.
"""
import argparse
import collections
import dataclasses
import glob
import json
import os
import sys
import tempfile

from benchmarks import train_step

CONVOLUTION_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
# oneDNN builds rename the stock kernels, e.g. _MklNativeConv2D, _MklFusedBatchNormV3.
_ONEDNN_PREFIXES = ("_MklNative", "_Mkl")


@dataclasses.dataclass(frozen=True)
class OpTime:
  op_type: str
  milliseconds_per_step: float
  share_of_busy: float


def op_type_name(profiled_type: str) -> str:
  """The stock TF op name of a profiled op type (oneDNN's prefixes dropped)."""
  for prefix in _ONEDNN_PREFIXES:
    if profiled_type.startswith(prefix):
      return profiled_type[len(prefix):]
  return profiled_type


def read_op_stats(profile_dir: str) -> list[dict]:
  """Rows of the profiler's framework_op_stats table (one per op) from the newest trace."""
  # TensorBoard's profile plugin converts traces with this same call.
  from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # pylint: disable=import-outside-toplevel
  traces = sorted(glob.glob(os.path.join(profile_dir, "plugins", "profile", "*", "*.xplane.pb")))
  if not traces:
    raise ValueError(f"profile_dir holds no profiler trace. Received: {profile_dir!r}")
  data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(
      [traces[-1]], "framework_op_stats", {"use_saved_result": False})
  if not ok:
    raise RuntimeError(f"The profiler could not convert {traces[-1]} to op statistics.")
  table = json.loads(data)[0]
  columns = [column["id"] for column in table["cols"]]
  return [dict(zip(columns, (cell.get("v") for cell in row["c"]))) for row in table["rows"]]


def op_times(rows: list[dict], steps: int) -> list[OpTime]:
  """Self time per op type, busiest first, without the profiler's IDLE row."""
  microseconds = collections.Counter()
  for row in rows:
    if row["type"] != "IDLE":
      microseconds[op_type_name(row["type"])] += row["total_self_time"]
  busy = sum(microseconds.values())
  return [OpTime(name, total / 1e3 / steps, total / busy)
          for name, total in microseconds.most_common()]


def profile_train_step(item: train_step.Item, config: train_step.BenchmarkConfig,
                       profile_dir: str) -> dict:
  """Profiles one call of `item`'s train function (steps_per_loop steps).

  Returns the op times per step and the convolutions' GFLOP/s.
  """
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  trainer, train_function = train_step.build_train_function(item, config, data_dir=None)
  steps = item.steps_per_loop
  call = train_step.steps_on_input(trainer, train_function, item, config, None, steps)
  call().numpy()  # traces, compiles and warms the caches
  tf.profiler.experimental.start(profile_dir)
  call().numpy()
  tf.profiler.experimental.stop()
  times = op_times(read_op_stats(profile_dir), steps)
  convolutions = [t for t in times if t.op_type in CONVOLUTION_OPS]
  training_flops = (train_step.TRAIN_FLOPS_PER_FORWARD * config.batch_size *
                    train_step.forward_flops_per_image(trainer.model, (keras.layers.Conv2D,)))
  return {"op_times": times,
          "convolution_share": sum(t.share_of_busy for t in convolutions),
          "convolution_gflops_per_second": training_flops / 1e6 / sum(
              t.milliseconds_per_step for t in convolutions)}


def format_report(report: dict, top: int) -> str:
  lines = [f"{'op type':<32}{'ms/step':>10}{'share':>8}"]
  for t in report["op_times"][:top]:
    lines.append(f"{t.op_type:<32}{t.milliseconds_per_step:10.1f}{t.share_of_busy:8.1%}")
  step_milliseconds = sum(t.milliseconds_per_step for t in report["op_times"])
  lines.append(f"busy time per step {step_milliseconds:.0f} ms; convolutions "
               f"{report['convolution_share']:.1%} of it at "
               f"{report['convolution_gflops_per_second']:.1f} GFLOP/s")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.op_profile",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--precision", default="fp32", choices=sorted(train_step.PRECISIONS))
  parser.add_argument("--steps", type=int, default=2, help="profiled train steps")
  parser.add_argument("--batch_size", type=int, default=train_step.BenchmarkConfig.batch_size)
  parser.add_argument("--image_size", type=int, default=train_step.BenchmarkConfig.image_size)
  parser.add_argument("--inter_op_threads", type=int, default=1,
                      help="1: ops one at a time, so their times add up to the step")
  parser.add_argument("--top", type=int, default=15, help="op types listed")
  parser.add_argument("--profile_dir", default=None, help="where the trace goes (default: temp)")
  parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error(f"--steps must be >= 1. Received: {args.steps}")
  config = dataclasses.replace(
      train_step.QUICK_CONFIG if args.quick else dataclasses.replace(
          train_step.BenchmarkConfig(), batch_size=args.batch_size, image_size=args.image_size),
      inter_op_threads=args.inter_op_threads)
  train_step.configure_threads(config)
  item = train_step.Item("train", args.precision, steps_per_loop=args.steps)
  profile_dir = args.profile_dir or tempfile.mkdtemp(prefix="op_profile_")
  print(format_report(profile_train_step(item, config, profile_dir), args.top))
  return 0


if __name__ == "__main__":
  sys.exit(main())
