"""What a run tells the user while it trains: log lines, a terminal progress bar, TensorBoard
scalars and images, and the evaluation report."""
import io
import os
import sys

from absl import logging
import keras
import numpy as np
from PIL import Image
import tensorflow as tf
from tensorboard.plugins.image import metadata as image_metadata

from official_resnet import eval_report

# The sums the train and eval loops return, by name. On the device they travel packed in
# this order (pack_sums), so that one all-reduce carries them all.
SUM_NAMES = ("loss_sum", "top_1_correct", "top_k_correct", "examples")
# Eval results too large for every history entry: stats.json keeps the last evaluation's.
REPORT_FIELDS = ("per_class", "confusion_matrix")
# Most confused pairs named in the log line of each evaluation.
LOGGED_PAIRS = 3


def pack_sums(sums):
  """{name in SUM_NAMES: scalar} -> one float32 vector in SUM_NAMES order."""
  return tf.stack([tf.cast(sums[name], tf.float32) for name in SUM_NAMES])


def unpack_sums(packed):
  """pack_sums' vector (or its first len(SUM_NAMES) values) -> {name in SUM_NAMES: scalar}."""
  return {name: packed[index] for index, name in enumerate(SUM_NAMES)}


class MetricSums:
  """Running sums over some steps of the train steps' SUM_NAMES values, and their time.

  A train step's loss_sum is its mean loss over the global batch, so the window's loss
  is a mean per step.
  """

  def __init__(self):
    self.reset()

  def reset(self):
    self.sums = dict.fromkeys(SUM_NAMES, 0.0)
    self.steps = 0
    self.seconds = 0.0

  def add(self, sums, steps, seconds):
    """Adds `sums` ({name in SUM_NAMES: number}, extra names ignored) of `steps` steps."""
    for name in SUM_NAMES:
      self.sums[name] += float(sums[name])
    self.steps += steps
    self.seconds += seconds

  def result(self):
    """Mean loss per step, accuracies per example, examples per second; {} before any step."""
    if not self.steps:
      return {}
    examples = self.sums["examples"]
    return {"loss": self.sums["loss_sum"] / self.steps,
            "top_1_accuracy": self.sums["top_1_correct"] / examples,
            "top_5_accuracy": self.sums["top_k_correct"] / examples,
            "examples_per_second": examples / self.seconds if self.seconds else 0.0}


def eval_result(sums, confusion, class_names):
  """Eval metrics from the SUM_NAMES sums over the whole eval set (loss_sum: summed per
  example) and the confusion matrix (rows: true class, columns: predicted)."""
  loss, top_1, top_5, examples = (float(sums[name]) for name in SUM_NAMES)
  if not examples:
    raise ValueError("The evaluation data set is empty; check eval_split / the validation "
                     "files. Received: 0 examples")
  # Summed as float32 on the device: exact counts up to 2**24 per cell.
  confusion = np.rint(np.asarray(confusion)).astype(np.int64)
  return {"loss": loss / examples, "top_1_accuracy": top_1 / examples,
          "top_5_accuracy": top_5 / examples, "examples": int(examples),
          "per_class": eval_report.per_class(confusion, class_names),
          "confusion_matrix": confusion.tolist()}


def eval_fields(metrics, with_report=True):
  """{"eval_<name>": value} of eval_result's metrics; REPORT_FIELDS only `with_report`."""
  return {f"eval_{name}": value for name, value in metrics.items()
          if with_report or name not in REPORT_FIELDS}


class Reporter:
  """Reports train windows and evaluations; silent on every worker but the chief.

  TensorBoard scalars go to model_dir/train and model_dir/eval when `tensorboard`, with
  each evaluation's per-class scalars and report picture. Each evaluation also writes its
  report (eval_report) to model_dir/eval. The progress bar shows only when stdout is a
  terminal and `progress_bar`.
  """

  def __init__(self, model_dir, total_steps, active=True, tensorboard=False, progress_bar=True):
    self._active = active
    self._model_dir = model_dir
    self._writers = {} if (active and tensorboard) else None
    self._progbar = None
    if active and progress_bar and sys.stdout.isatty():
      self._progbar = keras.utils.Progbar(total_steps, unit_name="step")
      self._progbar.update(0)
    self._total_steps = total_steps

  def _writer(self, kind):
    if kind not in self._writers:
      self._writers[kind] = tf.summary.create_file_writer(os.path.join(self._model_dir, kind))
    return self._writers[kind]

  def _write(self, kind, step, scalars):
    if self._writers is None:
      return
    with self._writer(kind).as_default(step=step):
      for name, value in scalars.items():
        tf.summary.scalar(name, value)

  def _write_image(self, kind, step, name, png):
    if self._writers is None:
      return
    with Image.open(io.BytesIO(png)) as image:
      width, height = image.size
    # The images plugin's event, with the report's own PNG bytes (tf.summary.image would
    # encode the picture again, without its text chunks).
    with self._writer(kind).as_default(step=step):
      tf.summary.write(name, tf.constant([str(width), str(height), png]),
                       metadata=image_metadata.create_summary_metadata(None, None))

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
    directory = os.path.join(self._model_dir, eval_report.REPORT_DIR)
    names = [row["class"] for row in metrics["per_class"]]
    pairs = eval_report.most_confused(metrics["confusion_matrix"], LOGGED_PAIRS)
    worst = min(metrics["per_class"], key=lambda row: row["f1"])
    logging.info("eval at step %d: most confused (true -> predicted) %s; lowest F1 %s (%.3f); "
                 "report in %s", step,
                 ", ".join(f"{names[true]} -> {names[predicted]} {count}"
                           for true, predicted, count in pairs) or "none",
                 worst["class"], worst["f1"], directory)
    png = eval_report.picture(step, metrics)
    eval_report.write(directory, metrics, png)
    scalars = {name: value for name, value in metrics.items()
               if name != "examples" and name not in REPORT_FIELDS}
    for row in metrics["per_class"]:
      scalars.update({f"{name}/{row['class']}": row[name] for name in ("precision", "recall", "f1")})
    self._write("eval", step, scalars)
    self._write_image("eval", step, "confusion_matrix", png)

  def close(self):
    for writer in (self._writers or {}).values():
      writer.flush()
