"""What a train step needs in memory, estimated before anything of a run is built, and
whether that fits the machine (CPU replicas) or each GPU.

The estimate counts, per replica: the activations of one step (every layer's output for
the replica's share of the batch, in the compute dtype: what the backward pass keeps),
and the weights with their gradients, optimizer slots and weight average in float32;
per process, what TensorFlow itself holds (RUNTIME_BYTES). The layer outputs come from
the model built without weights (keras.StatelessScope: shapes only, no variable
allocated). tests/test_memory.py checks the estimate against the peak resident memory
of a run it measures: the estimate is at least that peak and at most ESTIMATE_FACTOR
times it, for float32 on the CPU.
"""
import dataclasses
import os
import subprocess

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from official_resnet import models
from official_resnet import private_apis

GiB = 2**30
# What TensorFlow, Keras, Python and the traced step hold besides activations and weights:
# the upper end of short CPU runs' peaks less those (docs/training.md, "Memory").
RUNTIME_BYTES = int(0.75 * GiB)
# How far above a run's measured peak the estimate may lie (tests/test_memory.py).
ESTIMATE_FACTOR = 1.5
# The optimizer's float32 slots per weight: momentum; Adam's, LAMB's and RMSprop's (with
# momentum) two.
_OPTIMIZER_SLOTS = {"sgd": 1, "lars": 1, "rmsprop": 2, "adam": 2, "adamw": 2, "lamb": 2}
_FLOAT32_BYTES = 4


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """A train step's memory: `replicas` on this host's `device` ("CPU" or "GPU"), each with
  its share of the global batch over `global_replicas` (other hosts' too)."""
  device: str
  replicas: int
  global_replicas: int
  parameters: int
  # Layer outputs of one example, summed, and the bytes of each (the compute dtype).
  activations_per_example: int
  activation_bytes: int
  # float32 copies of each weight: weight, gradient, optimizer slots, average.
  weight_copies: int

  def per_replica_bytes(self, batch_size):
    """One replica's activations, weights, gradients, optimizer slots and average."""
    per_replica_batch = -(-batch_size // self.global_replicas)
    return (per_replica_batch * self.activations_per_example * self.activation_bytes
            + self.parameters * self.weight_copies * _FLOAT32_BYTES)

  def bytes_needed(self, batch_size):
    """What must fit the memory checked: the host's (CPU replicas) or one GPU's."""
    if self.device == "GPU":
      return self.per_replica_bytes(batch_size)
    return RUNTIME_BYTES + self.replicas * self.per_replica_bytes(batch_size)

  def largest_batch(self, available_bytes):
    """The largest global batch that fits `available_bytes` (a multiple of the replicas, and
    of 8 per replica when that large), or None when even one example per replica does not."""
    replicas = self.global_replicas
    fixed = self.bytes_needed(0)
    largest = (available_bytes - fixed) // (self.bytes_needed(replicas) - fixed) * replicas
    if largest < replicas:
      return None
    step = 8 * replicas if largest >= 8 * replicas else replicas
    return int(largest // step * step)


def estimate(model_config, optimizer_name, ema, device, replicas, global_replicas=None):
  """The StepMemory of training `model_config` with that optimizer (ema: with a weight
  average) on `replicas` replicas of `device` here, of `global_replicas` (default:
  `replicas`) in all."""
  # At the training size: a model that takes any size has no layer shapes of its own.
  # Shapes only: no initial values are drawn (0.6 s for ResNet-50 on 2 cores).
  model = private_apis.build_without_weights(
      lambda: models.build_model(dataclasses.replace(model_config, any_input_size=False)))
  activations = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
  compute_dtype = keras.mixed_precision.DTypePolicy(model_config.dtype_policy).compute_dtype
  return StepMemory(
      device=device, replicas=replicas, global_replicas=global_replicas or replicas,
      parameters=model.count_params(),
      activations_per_example=activations,
      activation_bytes=_FLOAT32_BYTES if compute_dtype == "float32" else 2,
      weight_copies=2 + _OPTIMIZER_SLOTS[optimizer_name] + int(ema))


def peak_resident_bytes():
  """This process' peak resident memory: /proc's VmHWM, its own memory's. Not getrusage's
  ru_maxrss, into which Linux carries the peak of the image a process had before exec (a
  child of a 2 GiB process reports 2 GiB from its first line)."""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  raise OSError("/proc/self/status has no VmHWM line")


def _read_int(path):
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    return None
  return int(text) if text.isdigit() else None


def host_memory():
  """(available, total) bytes of this machine's memory, within this process' cgroup limit."""
  info = {}
  with open("/proc/meminfo") as f:
    for line in f:
      name, value = line.split(":", 1)
      info[name] = int(value.split()[0]) * 1024
  total, available = info["MemTotal"], info.get("MemAvailable", info["MemFree"])
  for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                  "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
    limit, usage = _read_int(limit_file), _read_int(usage_file)
    if limit is not None and limit < total:
      total = limit
      available = min(available, limit - (usage or 0))
  return available, total


def gpu_memory():
  """Bytes of memory of the smallest visible GPU (nvidia-smi); None when nvidia-smi cannot tell.

  The total, not what is free: by the time the strategy exists, TensorFlow has reserved
  most of each GPU for itself.
  """
  try:
    result = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                             "--format=csv,noheader,nounits"], capture_output=True, text=True,
                            timeout=20, check=True)
    totals = [int(line) * 2**20 for line in result.stdout.split()]
  except (OSError, subprocess.SubprocessError, ValueError):
    return None
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible:
    indices = [int(index) for index in visible.split(",") if index.strip().isdigit()]
    totals = [totals[index] for index in indices if index < len(totals)] or totals
  return min(totals) if totals else None


def _gib(num_bytes):
  """A size in GiB, or in MiB below one GiB."""
  if num_bytes < GiB:
    return f"{num_bytes / 2**20:.0f} MiB"
  return f"{num_bytes / GiB:.1f} GiB"


def check_fits(step_memory, batch_size, available, total, what):
  """Raises ValueError when the step at `batch_size` needs more than `available` bytes, naming
  the estimate, the memory and a batch size that fits; logs the estimate otherwise."""
  needed = step_memory.bytes_needed(batch_size)
  per_replica = step_memory.per_replica_bytes(batch_size)
  weights = step_memory.parameters * step_memory.weight_copies * _FLOAT32_BYTES
  details = (f"{step_memory.replicas} {step_memory.device} "
             f"replica{'s' if step_memory.replicas > 1 else ''}, each "
             f"{_gib(per_replica - weights)} of activations and {_gib(weights)} of weights, "
             "gradients and optimizer slots")
  if step_memory.device == "CPU":
    details += f", and {_gib(RUNTIME_BYTES)} for TensorFlow"
  if needed <= available:
    logging.info("Memory: the train step needs about %s (%s); %s has %s available.",
                 _gib(needed), details, what, _gib(available))
    return
  fits = step_memory.largest_batch(available)
  advice = (f"--batch_size={fits} fits (about {_gib(step_memory.bytes_needed(fits))})"
            if fits else f"not even --batch_size={step_memory.global_replicas} fits: use a smaller "
            "--image_size or --architecture")
  raise ValueError(
      f"batch_size={batch_size} needs about {_gib(needed)} for a train step ({details}), more "
      f"than the {_gib(available)} {what} has available (of {_gib(total)}); {advice}. "
      "--nocheck_memory runs it anyway. Nothing was written.")


def check_train_step(experiment, strategy):
  """Refuses (ValueError) a train step of `experiment` under `strategy` that cannot fit the
  machine, or each GPU; call it before the model is built. TPUs, and GPUs nvidia-smi cannot
  read, are not checked (logged)."""
  if isinstance(strategy, tf.distribute.TPUStrategy):
    logging.info("Memory: not checked on a TPU.")
    return
  try:
    replicas = len(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy (off): one replica, and no device list.
    replicas = 1
  device = "GPU" if experiment.runtime.num_gpus else "CPU"
  batch_size = experiment.data.batch_size
  step_memory = estimate(experiment.model, experiment.train.optimizer.name,
                         experiment.train.ema_decay is not None, device, replicas,
                         strategy.num_replicas_in_sync)
  if device == "GPU":
    total = gpu_memory()
    if total is None:
      logging.info("Memory: nvidia-smi cannot tell the GPUs' memory; the train step (about "
                   "%s per GPU) is not checked.", _gib(step_memory.bytes_needed(batch_size)))
      return
    check_fits(step_memory, batch_size, total, total, "each GPU")
  else:
    check_fits(step_memory, batch_size, *host_memory(), "this machine")
