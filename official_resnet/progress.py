"""What a run tells the user while it trains: log lines, a terminal progress bar, TensorBoard
scalars and images, and the evaluation report."""
import contextlib
import io
import logging as python_logging
import math
import os
import sys
import time

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf
from tensorboard.plugins.image import metadata as image_metadata

from official_resnet import eval_report

# The sums the eval loop returns, by name. On the device they travel packed in this order
# (pack_sums), so that one all-reduce carries them all.
SUM_NAMES = ("loss_sum", "top_1_correct", "top_k_correct", "examples")
# The train step's: the same, and the L2 term's part of loss_sum.
TRAIN_SUM_NAMES = SUM_NAMES + ("l2_sum",)
# Eval results too large for every history entry: stats.json keeps the last evaluation's.
REPORT_FIELDS = ("per_class", "confusion_matrix")
# Most confused pairs named in the log line of each evaluation.
LOGGED_PAIRS = 3
# Characters of the terminal bar's filling part.
BAR_WIDTH = 10


def pack_sums(sums, names=SUM_NAMES):
  """{name in `names`: scalar} -> one float32 vector in `names` order."""
  return tf.stack([tf.cast(sums[name], tf.float32) for name in names])


def unpack_sums(packed, names=SUM_NAMES):
  """pack_sums' vector (or its first len(names) values) -> {name in `names`: scalar}."""
  return {name: packed[index] for index, name in enumerate(names)}


def format_duration(seconds):
  """45s, 3m05s, 2h03m."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class MetricSums:
  """Running sums of the train steps' TRAIN_SUM_NAMES values over some steps, and their time.

  A train step's loss_sum and l2_sum are means over the global batch, so the steps' losses
  are means per step.
  """

  def __init__(self):
    self.reset()

  def reset(self):
    self.sums = dict.fromkeys(TRAIN_SUM_NAMES, 0.0)
    self.steps = 0
    self.seconds = 0.0
    self.first_step = self.last_step = None

  def add(self, sums, first_step, last_step, seconds, skipped=0):
    """Adds `sums` ({name in TRAIN_SUM_NAMES: number}, extra names ignored) of the global
    steps first_step..last_step, `skipped` of which (nan_policy='skip') are not in them."""
    for name in TRAIN_SUM_NAMES:
      self.sums[name] += float(sums[name])
    self.steps += last_step - first_step + 1 - skipped
    self.seconds += seconds
    if self.first_step is None:
      self.first_step = first_step
    self.last_step = last_step

  def span(self):
    """"steps 101-200" (or "step 7"): the steps added since the last reset."""
    if self.first_step == self.last_step:
      return f"step {self.last_step}"
    return f"steps {self.first_step}-{self.last_step}"

  def result(self):
    """Mean losses per step (loss = cross_entropy + l2), accuracies per example, examples per
    second; {} before any step."""
    if not self.steps:
      return {}
    examples = self.sums["examples"]
    loss, l2 = self.sums["loss_sum"] / self.steps, self.sums["l2_sum"] / self.steps
    return {"loss": loss, "cross_entropy": loss - l2, "l2": l2,
            "top_1_accuracy": self.sums["top_1_correct"] / examples,
            "top_5_accuracy": self.sums["top_k_correct"] / examples,
            "examples_per_second": examples / self.seconds if self.seconds else 0.0}


class Clock:
  """This process's training time: elapsed since it began, and the time left at the rate it
  measured itself.

  The rate counts from the start of the second call over the steps this process ran, so
  the first call's tracing and compilation, the host's first work after it (the first
  checkpoint's save) and the steps a resumed run trained before never enter it. Wall time
  between calls (checkpoints, evaluations) counts.
  """

  def __init__(self, total_steps, now=time.monotonic):
    self._total_steps = total_steps
    self._now = now
    self._began = now()
    self._calls = 0
    self._rate_from = None

  def before_call(self, step):
    """Before each call of the train function from `step`: the second sets where the rate
    counts from."""
    if self._calls == 1:
      self._rate_from = (step, self._now())
    self._calls += 1

  def remaining(self, step):
    """Seconds left to the last step at the measured rate; None before a rate is known."""
    if self._rate_from is None or step <= self._rate_from[0]:
      return None
    from_step, from_time = self._rate_from
    return (self._total_steps - step) * (self._now() - from_time) / (step - from_step)

  def eta(self, step):
    """"ETA 6m40s"; "ETA ?" before a rate is known."""
    remaining = self.remaining(step)
    return f"ETA {'?' if remaining is None else format_duration(remaining)}"

  def describe(self, step):
    """"elapsed 1m40s, ETA 6m40s"."""
    return f"elapsed {format_duration(self._now() - self._began)}, {self.eta(step)}"


class TerminalBar:
  """One line on a terminal, drawn again in place at each update.

  While it is shown, every record reaching a Python logging handler of the root or the
  tensorflow logger (absl's among them) erases it first, so a bar never shares a line with
  a log line; the next update draws it again below.
  """

  def __init__(self, stream):
    self._stream = stream
    self._shown = False
    self._handlers = [handler for name in (None, "tensorflow")
                      for handler in python_logging.getLogger(name).handlers]
    for handler in self._handlers:
      handler.addFilter(self._erase_before)

  def _erase_before(self, record):
    del record
    self.erase()
    return True

  def _columns(self):
    """$COLUMNS, else the terminal's width; 80 when neither says (a bare pty says 0)."""
    if os.environ.get("COLUMNS", "").isdigit():
      return int(os.environ["COLUMNS"])
    try:
      return os.get_terminal_size(self._stream.fileno()).columns or 80
    except (OSError, ValueError):
      return 80

  def draw(self, text):
    # A line wider than the terminal wraps, and "\r" would go back to its last row only.
    self._stream.write("\r" + text[:self._columns() - 1] + "\x1b[K")
    self._stream.flush()
    self._shown = True

  def erase(self):
    if self._shown:
      self._stream.write("\r\x1b[K")
      self._stream.flush()
      self._shown = False

  def close(self):
    self.erase()
    for handler in self._handlers:
      handler.removeFilter(self._erase_before)


_stage_label = None


@contextlib.contextmanager
def stage(label):
  """While it lasts, the lines and the bar of each Reporter made start with "[label]"."""
  global _stage_label
  outer, _stage_label = _stage_label, label
  try:
    yield
  finally:
    _stage_label = outer


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


def _train_figures(metrics):
  return (f"loss {metrics['loss']:.4f} = cross entropy {metrics['cross_entropy']:.4f} + L2 "
          f"{metrics['l2']:.4f}, top-1 {metrics['top_1_accuracy']:.4f}, "
          f"top-5 {metrics['top_5_accuracy']:.4f}")


def _eval_figures(metrics):
  return (f"loss {metrics['loss']:.4f} (cross entropy, no L2 term), top-1 "
          f"{metrics['top_1_accuracy']:.4f}, top-5 {metrics['top_5_accuracy']:.4f} over "
          f"{metrics['examples']} examples")


class Reporter:
  """Reports train steps, epochs and evaluations; silent on every worker but the chief.

  Log lines give the step, the epoch, the time elapsed and left (Clock) and the train
  losses and accuracies as means over the steps they name. TensorBoard scalars go to
  model_dir/train and model_dir/eval when `tensorboard`, with each evaluation's per-class
  scalars and report picture. Each evaluation also writes its report (eval_report) to
  model_dir/eval. The progress bar shows only when stderr (where the log goes) is a
  terminal and `progress_bar`. Inside stage(label) every line and the bar name the stage.
  `clock` (a Clock of total_steps) times the run from now when not given.
  """

  def __init__(self, model_dir, total_steps, active=True, tensorboard=False, progress_bar=True,
               steps_per_epoch=None, clock=None):
    self._active = active
    self._model_dir = model_dir
    self._writers = {} if (active and tensorboard) else None
    self._total_steps = total_steps
    self._steps_per_epoch = steps_per_epoch
    self._label = f"[{_stage_label}] " if _stage_label else ""
    self._clock = clock or Clock(total_steps)
    self._bar = None
    if active and progress_bar and sys.stderr.isatty():
      self._bar = TerminalBar(sys.stderr)
    # What the bar shows while the log window is empty: the window logged last.
    self._logged_window = None

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

  def _epoch(self, step):
    """"epoch 2/5" from step 101 to step 200 of 500 steps, 100 an epoch."""
    epochs = math.ceil(self._total_steps / self._steps_per_epoch)
    return f"epoch {max(1, math.ceil(step / self._steps_per_epoch))}/{epochs}"

  def before_call(self, step):
    """Before each call of the train function from `step` (Clock.before_call)."""
    self._clock.before_call(step)

  def train(self, step, window, learning_rate):
    """The log line of the steps in `window` (a MetricSums), ending at `step`."""
    metrics = window.result()
    if not self._active or not metrics:
      return
    logging.info("%sstep %d/%d: %s (means over %s), lr %.6g, %.1f examples/s; %s, %s",
                 self._label, step, self._total_steps, _train_figures(metrics), window.span(),
                 learning_rate, metrics["examples_per_second"], self._epoch(step),
                 self._clock.describe(step))
    self._write("train", step, {**metrics, "learning_rate": learning_rate})
    self._logged_window = (metrics, window.span())

  def epoch_end(self, step, epoch_window, evaluation=None):
    """The line of the epoch ending at `step`: its train figures over the steps this process
    ran (epoch_window, a MetricSums), and its `evaluation` (eval_result's) when one ended it."""
    metrics = epoch_window.result()
    if not self._active or not metrics:
      return
    evaluated = f"; eval {_eval_figures(evaluation)}" if evaluation else ""
    logging.info("%s%s done at step %d/%d: train %s, %.1f examples/s (means over %s)%s; %s",
                 self._label, self._epoch(step), step, self._total_steps,
                 _train_figures(metrics), metrics["examples_per_second"], epoch_window.span(),
                 evaluated, self._clock.describe(step))

  def show_progress(self, step, window):
    """Draws the bar at `step` with the means of `window` (a MetricSums) so far, or those of
    the window logged last while it is empty."""
    if self._bar is None:
      return
    shown = (window.result(), window.span()) if window.steps else self._logged_window
    filled = round(BAR_WIDTH * step / self._total_steps)
    text = (f"{self._label}{step}/{self._total_steps} "
            f"[{'=' * filled}{' ' * (BAR_WIDTH - filled)}] {self._epoch(step)}, "
            f"{self._clock.eta(step)}")
    if shown:
      # The naming first: a narrow terminal cuts the line's end.
      text += f" | means over {shown[1]}: {_train_figures(shown[0])}"
    self._bar.draw(text)

  def hide_progress(self):
    """Erases the bar before the host's work between calls (whatever it prints, C++ lines
    included, then starts on a line of its own)."""
    if self._bar is not None:
      self._bar.erase()

  def evaluate(self, step, metrics):
    if not self._active:
      return
    logging.info("%seval at step %d: %s", self._label, step, _eval_figures(metrics))
    directory = os.path.join(self._model_dir, eval_report.REPORT_DIR)
    names = [row["class"] for row in metrics["per_class"]]
    pairs = eval_report.most_confused(metrics["confusion_matrix"], LOGGED_PAIRS)
    worst = min(metrics["per_class"], key=lambda row: row["f1"])
    logging.info("%seval at step %d: most confused (true -> predicted) %s; lowest F1 %s (%.3f); "
                 "report in %s", self._label, step,
                 ", ".join(f"{names[true]} -> {names[predicted]} {count}"
                           for true, predicted, count in pairs) or "none",
                 worst["class"], worst["f1"], directory)
    png = eval_report.picture(step, metrics)
    eval_report.write(directory, metrics, png)
    scalars = {name: value for name, value in metrics.items()
               if name != "examples" and name not in REPORT_FIELDS}
    # Beside train/cross_entropy in TensorBoard: the eval loss has no L2 term.
    scalars["cross_entropy"] = metrics["loss"]
    for row in metrics["per_class"]:
      scalars.update({f"{name}/{row['class']}": row[name]
                      for name in ("precision", "recall", "f1")})
    self._write("eval", step, scalars)
    self._write_image("eval", step, "confusion_matrix", png)

  def close(self):
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    for writer in (self._writers or {}).values():
      writer.flush()
