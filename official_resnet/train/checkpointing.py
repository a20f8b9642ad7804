"""Checkpoints of a run: the one way to read one back, and the saving during training.

A trainer checkpoint (model_dir/ckpt-<step>) holds `model`, `optimizer`, `step` and, with
an average of the weights, `ema` (ema.CHECKPOINT_KEY). restore() reads one for every
reader: a resumed run (everything), an evaluation and an export (the model and, when the
checkpoint has it, the average of the weights in its place).
"""
import os

from absl import logging
import tensorflow as tf

from input_pipeline import checks
from official_resnet import config as config_lib
from official_resnet import distribute
from official_resnet import ema as ema_lib
from official_resnet import initial_weights
from official_resnet import models
from official_resnet import run_state

CHECKPOINT_NAME = "ckpt"


def state_checkpoint(model, *, step=None, optimizer=None, weight_average=None):
  """A tf.train.Checkpoint of `model` and of those of `step` (the global step variable),
  `optimizer` and `weight_average` (an ema.WeightAverage) given, under the names trainer
  checkpoints hold them by: what training saves, and what restore() reads into."""
  objects = {"model": model, "step": step, "optimizer": optimizer,
             ema_lib.CHECKPOINT_KEY: weight_average.state if weight_average is not None else None}
  return tf.train.Checkpoint(
      **{name: value for name, value in objects.items() if value is not None})


def restore(path, checkpoint, *, weights="raw", weight_average=None):
  """Reads trainer checkpoint `path` into `checkpoint` (a state_checkpoint).

  weights: what checkpoint.model ends up holding: "raw" the trained weights, "ema" the
  checkpoint's average of the weights (ValueError when it has none), "auto" the average
  when there is one (what the run evaluated), else the trained weights.
  A resumed run reads into the checkpoint it saves, with an optimizer: every object of it
  must be in the file (the model gets the trained weights). Its `weight_average`, when the
  file has none (averaging newly switched on), starts at the restored weights. Without an
  optimizer, the file's optimizer slots are left unread.
  Returns whether the model holds the average of the weights.
  """
  checks.check_choice("weights", weights, config_lib.EXPORT_WEIGHTS)
  has_average = ema_lib.checkpoint_has_average(path)
  if weights == "ema" and not has_average:
    raise ValueError(f"weights='ema' needs a checkpoint with an average of the weights (a run "
                     f"with --ema_decay). Received: {path}, which has none")
  model = checkpoint.model
  if weight_average is not None and not has_average:
    without_average = state_checkpoint(model, step=getattr(checkpoint, "step", None),
                                       optimizer=getattr(checkpoint, "optimizer", None))
    without_average.restore(path).assert_existing_objects_matched()
    weight_average.reset()
    logging.warning("%s holds no average of the weights: the average starts at its weights.", path)
    return False
  status = checkpoint.restore(path)
  if not hasattr(checkpoint, "optimizer"):
    status.expect_partial()
  status.assert_existing_objects_matched()
  if not has_average or weights == "raw" or weight_average is not None:
    return False
  average = ema_lib.state_like(model)
  tf.train.Checkpoint(**{ema_lib.CHECKPOINT_KEY: average}).restore(
      path).expect_partial().assert_existing_objects_matched()
  # The average follows model.weights' order, the same under every policy and BatchNorm class.
  for weight, value in zip(model.weights, average.averages):
    weight.assign(value)
  return True


def check_run_config(model_dir, model_config, class_names):
  """ValueError when model_dir's config.json, if any, is of another model or other classes."""
  if tf.io.gfile.exists(run_state.config_path(model_dir)):
    run_state.check_resume_compatible(run_state.read_run_config(model_dir), model_config,
                                      class_names)


def initialize(model, experiment, scope):
  """Loads experiment.train.init_checkpoint into `model`: the backbone (scope "backbone") or
  everything ("all"); warns about the settings the weights imply that the run does not use."""
  path = experiment.train.init_checkpoint
  models.load_pretrained(model, path, load_head=scope == "all")
  logging.info("Initialized %s from %s.", scope, path)
  implied = initial_weights.implied_settings(initial_weights.weights_info(path), experiment.data)
  sections = {"data": experiment.data, "model": experiment.model}
  unlike = []
  for field, value in implied.items():
    section, name = field.split(".")
    if getattr(sections[section], name) != value:
      unlike.append(f"{field}={getattr(sections[section], name)!r} (the weights' {value!r})")
  if unlike:
    logging.warning("This run differs from what %s implies: %s. initial_weights.start_from "
                    "sets what weights imply.", path, "; ".join(unlike))


def _link_or_copy(source_prefix, prefix):
  """The files of checkpoint `source_prefix` under file prefix `prefix`: hard links, so that
  either can be deleted alone; copies where the filesystem has none (gs://, another disk)."""
  for source in tf.io.gfile.glob(f"{source_prefix}.*"):
    target = prefix + source[len(source_prefix):]
    try:
      os.link(source, target)
    except OSError:
      tf.io.gfile.copy(source, target, overwrite=True)


class Saver:
  """Saves `checkpoint` at the global step `step` into model_dir, keeping the last `keep`.

  Every worker must save (variables are read collectively); only the chief keeps its files.
  `before_saving` (or None) runs first on every worker: the replicas' BatchNorm statistics
  are averaged so that the file holds what every replica would evaluate.
  """

  def __init__(self, checkpoint, step, model_dir, strategy, keep, before_saving=None):
    self._checkpoint = checkpoint
    self._step = step
    self._before_saving = before_saving or (lambda: None)
    self._is_chief = distribute.is_chief(strategy)
    self._scratch_dir = os.path.join(model_dir, "worker_tmp", distribute.task_name(strategy))
    self._manager = tf.train.CheckpointManager(
        checkpoint, model_dir if self._is_chief else self._scratch_dir,
        max_to_keep=keep if self._is_chief else 1, checkpoint_name=CHECKPOINT_NAME)
    self._last_saved_step = None
    self._last_saved_path = None

  def save(self):
    """Saves the checkpoint of the current step, unless it is saved already."""
    step = int(self._step.numpy())
    if step == self._last_saved_step:
      return
    self._before_saving()
    path = self._manager.save(checkpoint_number=step)
    self._last_saved_step, self._last_saved_path = step, path
    if self._is_chief:
      logging.info("Saved %s.", path)
    else:
      tf.io.gfile.rmtree(self._manager.directory)

  def write(self, prefix):
    """Writes the checkpoint to file prefix `prefix`, outside the kept ones (best_checkpoint).

    When the checkpoint of this step is saved already, its files hold the same values: the
    chief links them under `prefix` (copies where links fail) and no worker writes (an
    epoch end's evaluation then adds no second write: a ResNet-18 checkpoint with its SGD
    slots took 0.09-0.36 s to save on 2 cores).
    """
    if self._last_saved_step == int(self._step.numpy()):
      if self._is_chief:
        _link_or_copy(self._last_saved_path, prefix)
      return
    self._before_saving()
    self._checkpoint.write(prefix)

  def scratch_dir(self, name):
    """Where a worker other than the chief writes what only the chief keeps."""
    return os.path.join(self._scratch_dir, name)
