"""Shared by the command-line tests: flags, subprocesses with the repository on their path,
signals at a step (to a subprocess or in-process), two-worker clusters on localhost, and the
two-worker test's global batches."""
import contextlib
import glob
import json
import logging
import os
import re
import signal
import socket
import threading

from absl import flags
import numpy as np
import tensorflow as tf

import trainer_fixtures as fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs", "smoke.cfg")
FLAGS = flags.FLAGS


def parse(*args):
  """Parses the flags as the command line would (inside a flagsaver context)."""
  FLAGS.unparse_flags()
  FLAGS(["official_resnet.main", *args])


def colour_flags(data_dir, model_dir, **overrides):
  """Flags for VGG16 (no BatchNorm) on 8 solid-colour images with a global batch of 8."""
  values = dict(source="folder", data_dir=data_dir, num_classes=4, image_size=32,
                normalization="unit", architecture="vgg16", base_width=8, batch_size=8,
                lr_schedule="constant", base_learning_rate=0.05, lr_base_batch_size=0,
                distribution_strategy="off", num_gpus=0, seed=3, model_dir=model_dir)
  values.update(overrides)
  return [f"--{name}={value}" for name, value in values.items()]


def subprocess_env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = os.pathsep.join([REPO, os.path.join(REPO, "tests"), env.get("PYTHONPATH", "")])
  return env


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def cluster_env(hosts, index):
  return dict(subprocess_env(), TF_CONFIG=json.dumps(
      {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}))


def signal_at_step(process, step, target=None, signum=signal.SIGTERM):
  """Reads `process`'s log until it reports `step`, signals `target` (default: it), returns the log."""
  lines = []
  for line in process.stderr:
    lines.append(line)
    if re.search(rf"\] step {step}/\d+: loss", line):
      (target or process).send_signal(signum)
      break
  _, rest = process.communicate(timeout=300)
  return "".join(lines) + rest


@contextlib.contextmanager
def signal_self_at_step(step, signum=signal.SIGTERM):
  """Inside: this process sends itself `signum` when a run logs step `step` (absl INFO logs
  must be on), as a user would; the trainer's handler gets it between two steps."""
  # Python runs signal handlers in the main thread only (so does the trainer's).
  assert threading.current_thread() is threading.main_thread()
  reported = re.compile(rf"step {step}/\d+: loss")

  class SignalAtStep(logging.Handler):
    def emit(self, record):
      if reported.match(record.getMessage()):
        os.kill(os.getpid(), signum)

  handler = SignalAtStep()
  logger = logging.getLogger("absl")
  logger.addHandler(handler)
  try:
    yield
  finally:
    logger.removeHandler(handler)


def checkpoint_steps(model_dir):
  """The steps of the trainer checkpoints in `model_dir`, in order."""
  return sorted(int(path.rsplit("-", 1)[1][:-len(".index")])
                for path in glob.glob(os.path.join(model_dir, "ckpt-*.index")))


def _variables(model_dir):
  """Weights, optimizer slots and counters of the latest checkpoint (not how many saves it took)."""
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
  return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
          if key.endswith("VARIABLE_VALUE") and not key.startswith("save_counter/")}


def assert_same_variables(model_dir, reference_dir, atol, rtol=0):
  """The latest checkpoints of both runs hold the same variables, values within the bounds;
  returns their keys."""
  resumed, reference = _variables(model_dir), _variables(reference_dir)
  assert resumed.keys() == reference.keys()
  for key, value in reference.items():
    np.testing.assert_allclose(resumed[key], value, atol=atol, rtol=rtol, err_msg=key)
  return list(reference)


def global_batches(steps, bad_step=None):
  """`steps` global batches of 8 normalized photo-like 32 px images (--normalization=unit);
  with `bad_step`, one NaN pixel in that global step's batch, in row 5: the second of two
  replicas (or workers)."""
  images, labels = fixtures.photo_batches(steps, 8, seed=7)
  images = images.astype(np.float32) / 127.5 - 1.0
  if bad_step is not None:
    images[bad_step - 1, 5, 3, 3, 0] = np.nan
  return images, labels
