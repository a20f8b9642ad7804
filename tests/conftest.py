"""Shared test setup: two logical CPU devices (for MirroredStrategy tests), quiet TF logs."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402  (after the environment above)

# Logical devices must be configured before TF initialises its runtime.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


# pytest's cache (.pytest_cache): the seconds each test took when it last ran, by node id.
TEST_SECONDS = "official_resnet/test_seconds"


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config, items):
  """Files longest first: ./run.sh test (--dist loadfile, a file per worker,
  --no-loadscope-reorder) hands each free worker the next file, so the longest should start
  first, not after the short ones (xdist's own order, by number of tests, starts a long file
  of one test last). A file's length is the sum of its selected tests' seconds in the last
  run that ran each; files none of whose tests ran before come after them, those with slow
  tests first, then by their number of tests."""
  cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
  recorded = cache.get(TEST_SECONDS, {}) if cache is not None else {}
  seconds, tests_per_file, slow_files = {}, {}, set()
  for item in items:
    tests_per_file[item.path] = tests_per_file.get(item.path, 0) + 1
    if item.nodeid in recorded:
      seconds[item.path] = seconds.get(item.path, 0.0) + recorded[item.nodeid]
    if item.get_closest_marker("slow"):
      slow_files.add(item.path)
  items.sort(key=lambda item: (item.path not in seconds, -seconds.get(item.path, 0.0),
                               item.path not in slow_files, -tests_per_file[item.path]))


_durations = {}


def pytest_runtest_logreport(report):
  _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
  # The controller records (under xdist it gets every worker's reports); workers do not write.
  config = session.config
  if getattr(config, "cache", None) is None or hasattr(config, "workerinput") or not _durations:
    return
  config.cache.set(TEST_SECONDS, {**config.cache.get(TEST_SECONDS, {}), **_durations})
