"""Shared test setup: two logical CPU devices (for MirroredStrategy tests), quiet TF logs."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tensorflow as tf  # noqa: E402  (after the environment above)

# Logical devices must be configured before TF initialises its runtime.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


def pytest_collection_modifyitems(items):
  """Files with slow tests first, then the others by their number of tests: ./run.sh test
  (--dist loadfile, a file per worker, --no-loadscope-reorder) then starts the long files
  first and ends with short ones, instead of xdist's order by number of tests alone, which
  starts a long file of one test last."""
  tests_per_file, slow_files = {}, set()
  for item in items:
    tests_per_file[item.path] = tests_per_file.get(item.path, 0) + 1
    if item.get_closest_marker("slow"):
      slow_files.add(item.path)
  items.sort(key=lambda item: (item.path not in slow_files, -tests_per_file[item.path]))
