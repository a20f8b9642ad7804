"""Shared test setup: two logical CPU devices (for MirroredStrategy tests), quiet TF logs."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# oneDNN's CPU kernels everywhere, as TF enables them by default only on some x86 CPUs
# (AVX-512 VNNI, AMX): the same numerics on every CI machine, and channels_first convolutions,
# which TF's own CPU kernels refuse.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import tensorflow as tf  # noqa: E402  (after the environment above)

# Logical devices must be configured before TF initialises its runtime.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
