"""op_profile: op-type breakdown of the train step from a real tf.profiler trace."""
import pytest

from benchmarks import op_profile
from benchmarks import train_step


def test_onednn_kernel_names_map_to_stock_op_types():
  assert op_profile.op_type_name("_MklNativeConv2DBackpropFilter") == "Conv2DBackpropFilter"
  assert op_profile.op_type_name("_MklFusedBatchNormV3") == "FusedBatchNormV3"
  assert op_profile.op_type_name("ReluGrad") == "ReluGrad"


def test_op_times_merge_kernels_drop_idle_and_divide_by_steps():
  rows = [{"type": "IDLE", "total_self_time": 5000.0},
          {"type": "_MklNativeConv2D", "total_self_time": 3000.0},
          {"type": "Conv2D", "total_self_time": 1000.0},
          {"type": "ReluGrad", "total_self_time": 4000.0}]
  times = op_profile.op_times(rows, steps=2)
  assert [t.op_type for t in times] == ["Conv2D", "ReluGrad"]
  assert times[0].milliseconds_per_step == pytest.approx(2.0)
  assert [t.share_of_busy for t in times] == pytest.approx([0.5, 0.5])


def test_a_folder_without_a_trace_is_refused(tmp_path):
  with pytest.raises(ValueError, match="holds no profiler trace"):
    op_profile.read_op_stats(str(tmp_path))


def test_profiled_train_step_accounts_for_every_convolution_direction(tmp_path):
  item = train_step.Item("train", "fp32", steps_per_loop=2)
  report = op_profile.profile_train_step(item, train_step.QUICK_CONFIG, str(tmp_path))
  types = {t.op_type: t for t in report["op_times"]}
  for op_type in op_profile.CONVOLUTION_OPS:
    assert types[op_type].milliseconds_per_step > 0, op_type
  # Batch norm trains too, so convolutions are part of the busy time, not all of it.
  assert types["FusedBatchNormGradV3"].milliseconds_per_step > 0
  assert 0 < report["convolution_share"] < 1
  assert report["convolution_gflops_per_second"] > 0
  assert "convolutions" in op_profile.format_report(report, top=5)
