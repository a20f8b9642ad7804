"""What a run tells the user while it trains: log lines, a terminal progress bar, TensorBoard scalars."""
import os
import sys

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# Per-step sums every loop returns: [loss, top-1 hits, top-5 hits, examples].
NUM_SUMS = 4
# TF 2.21 installs without tensorboard, which tf.summary.scalar needs; a raw write with
# the scalars plugin's metadata makes the same event.
SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)


class MetricSums:
  """Running sums over some steps of the per-step [loss, top-1, top-5, examples], and their time."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.sums = np.zeros(NUM_SUMS)
    self.steps = 0
    self.seconds = 0.0

  def add(self, sums, steps, seconds):
    self.sums += np.asarray(sums, dtype=np.float64)
    self.steps += steps
    self.seconds += seconds

  def result(self):
    """Mean loss per step, accuracies per example, examples per second; {} before any step."""
    if not self.steps:
      return {}
    loss, top_1, top_5, examples = (float(value) for value in self.sums)
    return {"loss": loss / self.steps, "top_1_accuracy": top_1 / examples,
            "top_5_accuracy": top_5 / examples,
            "examples_per_second": examples / self.seconds if self.seconds else 0.0}


def eval_result(sums):
  """Eval metrics from summed [loss, top-1, top-5, examples] over the whole eval set."""
  loss, top_1, top_5, examples = (float(value) for value in sums)
  if not examples:
    raise ValueError("The evaluation data set is empty; check eval_split / the validation "
                     "files. Received: 0 examples")
  return {"loss": loss / examples, "top_1_accuracy": top_1 / examples,
          "top_5_accuracy": top_5 / examples, "examples": int(examples)}


class Reporter:
  """Reports train windows and evaluations; silent on every worker but the chief.

  TensorBoard scalars go to model_dir/train and model_dir/eval when `tensorboard`.
  The progress bar shows only when stdout is a terminal.
  """

  def __init__(self, model_dir, total_steps, active=True, tensorboard=False):
    self._active = active
    self._model_dir = model_dir
    self._writers = {} if (active and tensorboard) else None
    self._progbar = None
    if active and sys.stdout.isatty():
      self._progbar = keras.utils.Progbar(total_steps, unit_name="step")
      self._progbar.update(0)
    self._total_steps = total_steps

  def _write(self, kind, step, scalars):
    if self._writers is None:
      return
    if kind not in self._writers:
      self._writers[kind] = tf.summary.create_file_writer(os.path.join(self._model_dir, kind))
    with self._writers[kind].as_default(step=step):
      for name, value in scalars.items():
        tf.summary.write(name, tf.constant(value, tf.float32), metadata=SCALAR_METADATA)

  def train(self, step, metrics, learning_rate):
    if not self._active or not metrics:
      return
    logging.info(
        "step %d/%d: loss %.4f, top-1 %.4f, top-5 %.4f, lr %.6g, %.1f examples/s", step,
        self._total_steps, metrics["loss"], metrics["top_1_accuracy"], metrics["top_5_accuracy"],
        learning_rate, metrics["examples_per_second"])
    self._write("train", step, {**metrics, "learning_rate": learning_rate})
    if self._progbar is not None:
      self._progbar.update(step, values=[("loss", metrics["loss"])])

  def evaluate(self, step, metrics):
    if not self._active:
      return
    logging.info("eval at step %d: loss %.4f, top-1 %.4f, top-5 %.4f over %d examples", step,
                 metrics["loss"], metrics["top_1_accuracy"], metrics["top_5_accuracy"],
                 metrics["examples"])
    self._write("eval", step, {name: value for name, value in metrics.items() if name != "examples"})

  def close(self):
    for writer in (self._writers or {}).values():
      writer.flush()
