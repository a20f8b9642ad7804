"""The best checkpoint of a run: model_dir/best/ckpt-<step> and best.json beside it.

best.json = {"metric": name, "value": v, "step": s, "checkpoint": "ckpt-<s>",
"metrics": {every eval metric at that step}}. It is written (by rename) only after its
checkpoint is complete, and older checkpoints are deleted only after that, so whenever
the run stops, best.json names a whole checkpoint; a resumed run reads it back and
replaces it only with a strictly better value.
"""
import json
import os

from absl import logging
import tensorflow as tf

from official_resnet import atomic_write

DIRECTORY = "best"
FILE = "best.json"
CHECKPOINT_PREFIX = "ckpt"
# Eval metrics that are better lower; the others (accuracies) are better higher.
LOWER_IS_BETTER = ("loss",)


def directory(model_dir):
  return os.path.join(model_dir, DIRECTORY)


def read(model_dir):
  """best.json of `model_dir` as a dict, or None when the run kept no best checkpoint."""
  path = os.path.join(directory(model_dir), FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def checkpoint_path(model_dir):
  """The prefix of `model_dir`'s best checkpoint; ValueError when it has none."""
  record = read(model_dir)
  if record is None:
    raise ValueError(f"`model_dir` must hold a best checkpoint ({DIRECTORY}/{FILE}, written by "
                     f"training with --best_metric). Received: model_dir={model_dir!r}, which has "
                     "none")
  return os.path.join(directory(model_dir), record["checkpoint"])


def is_better(metric, value, best_value):
  if best_value is None:
    return True
  return value < best_value if metric in LOWER_IS_BETTER else value > best_value


class BestCheckpoint:
  """Keeps the checkpoint with the best `metric` of model_dir/best.

  `write(prefix)` saves the checkpoint to a file prefix (every worker calls it: variables
  are read collectively); only the chief writes best.json and deletes files.
  """

  def __init__(self, model_dir, metric, is_chief=True):
    self.model_dir = model_dir
    self.metric = metric
    self.is_chief = is_chief
    record = read(model_dir)
    if record is not None and record["metric"] != metric:
      raise ValueError(
          f"model_dir/{DIRECTORY} keeps the best {record['metric']!r}; a resumed run must keep "
          f"the same metric or use a new --model_dir. Received: best_metric={metric!r}")
    self.record = record

  @property
  def value(self):
    return None if self.record is None else self.record["value"]

  def consider(self, step, metrics, write, scratch_dir=None):
    """Saves the checkpoint of `step` when metrics[metric] beats the kept one; returns whether.

    `write(prefix)` writes the checkpoint; a non-chief worker writes under `scratch_dir`,
    which it then deletes.
    """
    value = float(metrics[self.metric])
    if not is_better(self.metric, value, self.value):
      return False
    name = f"{CHECKPOINT_PREFIX}-{step}"
    # Every worker keeps the record, so all of them take the next decision (and write) together.
    self.record = {"metric": self.metric, "value": value, "step": int(step), "checkpoint": name,
                   "metrics": dict(metrics)}
    if not self.is_chief:
      write(os.path.join(scratch_dir, name))
      if tf.io.gfile.exists(scratch_dir):  # Nothing is written when the step is saved already.
        tf.io.gfile.rmtree(scratch_dir)
      return True
    best_dir = directory(self.model_dir)
    tf.io.gfile.makedirs(best_dir)
    write(os.path.join(best_dir, name))
    atomic_write.write_atomically(os.path.join(best_dir, FILE),
                                  json.dumps(self.record, indent=2, sort_keys=True))
    for stale in tf.io.gfile.glob(os.path.join(best_dir, f"{CHECKPOINT_PREFIX}-*")):
      if not os.path.basename(stale).startswith(f"{name}."):
        tf.io.gfile.remove(stale)
    logging.info("Best %s so far, %.6g at step %d: kept in %s.", self.metric, value, step, best_dir)
    return True
