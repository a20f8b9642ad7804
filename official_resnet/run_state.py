"""What a model_dir says about its run: config.json (written when training starts, checked on
resume), history.json (every history entry ever made, appended as it is made) and stats.json
(written when training ends; its history is history.json's).

config.json = {"model": asdict(ModelConfig), "data": asdict(DataConfig),
"train": asdict(TrainConfig), "runtime": asdict(RuntimeConfig), "class_names": [...]}.
Export and evaluation rebuild the model from it with read_run_config, and the
command takes the settings it is not given from it (with_saved_run).
"""
import dataclasses
import json
import os
import types
import typing

from absl import logging
import tensorflow as tf

from input_pipeline.config import DataConfig
from official_resnet import atomic_write
from official_resnet import config as config_lib
from official_resnet import run_lock
from official_resnet.models.config import ModelConfig

CONFIG_FILE = "config.json"
STATS_FILE = "stats.json"
EVAL_STATS_FILE = "eval_stats.json"
HISTORY_FILE = "history.json"
# Model fields a resumed run may change: they decide the compute dtype, layout and
# kernels, the replicas' BatchNorm moments or the input sizes taken, not the variables.
_RESUMABLE_MODEL_FIELDS = ("dtype_policy", "data_format", "fused_batch_norm", "sync_batch_norm",
                           "any_input_size")
# Data fields that say what the data is; the others (where it is, batch size, caching,
# threads, seed, the split to evaluate) may change between runs of the same model_dir.
_RUN_DEFINING_DATA_FIELDS = ("source", "tfds_name", "train_split", "image_size", "num_classes",
                             "label_offset", "normalization", "output_dtype",
                             "validation_fraction", "synthetic_num_examples")
# TrainConfig fields that together say how the run trains: a command that gives any of
# them gives the whole recipe; one that gives none keeps the run's.
TRAIN_RECIPE_FIELDS = ("train_epochs", "train_steps", "phases", "schedule", "optimizer",
                       "label_smoothing")
# Model fields added after runs were written without them -> how those runs were built, so an
# older config.json resumes, evaluates and exports the network it trained.
_MODEL_FIELDS_BEFORE_RECORDED = {"pool_padding": "symmetric"}
# The recipe fields that say how long the run trains (phases: their lengths).
RUN_LENGTH_FIELDS = ("train_epochs", "train_steps")
# What a command that trains may change on a run that has trained all its steps: where the
# data is, and how training runs, checkpoints and reports; not what the steps do. (The
# runtime and the model fields a resumed run may change may change too.)
MAY_CHANGE_WHEN_FINISHED = (
    "data.data_dir", "data.train_file_pattern", "data.eval_file_pattern", "data.eval_split",
    "data.cache", "data.eval_cache", "data.experimental_slack", "data.private_threads",
    "data.shuffle_buffer_size", "data.seed", "train.log_steps", "train.checkpoint_steps",
    "train.keep_checkpoints", "train.steps_per_loop", "train.enable_tensorboard",
    "train.profile_steps", "train.epochs_between_evals", "train.nan_policy",
    "train.normalize_on_device", "train.training_loop", "train.best_metric")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  model: ModelConfig
  data: DataConfig
  class_names: tuple[str, ...]
  train: config_lib.TrainConfig | None = None
  runtime: config_lib.RuntimeConfig | None = None


def _from_dict(cls, values):
  """Rebuilds dataclass `cls` from its asdict(): nested dataclasses and tuples come back."""
  hints = typing.get_type_hints(cls)
  known = {field.name for field in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    logging.warning("Ignoring %s fields this version does not know: %s", cls.__name__, unknown)
  kwargs = {name: _convert(hints[name], value) for name, value in values.items() if name in known}
  return cls(**kwargs)


def _convert(hint, value):
  if value is None:
    return None
  options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
  for option in options:
    if dataclasses.is_dataclass(option) and isinstance(value, dict):
      return _from_dict(option, value)
    if typing.get_origin(option) is tuple and isinstance(value, list):
      item_hint = typing.get_args(option)[0]
      return tuple(_convert(item_hint, item) for item in value)
  return value


def config_path(model_dir):
  return os.path.join(model_dir, CONFIG_FILE)


def _write_json(path, payload):
  atomic_write.write_atomically(path, json.dumps(payload, indent=2, sort_keys=True))


def write_run_config(model_dir, model_config, data_config, class_names, train_config=None,
                     runtime_config=None):
  payload = {"model": dataclasses.asdict(model_config), "data": dataclasses.asdict(data_config),
             "class_names": list(class_names)}
  if train_config is not None:
    payload["train"] = dataclasses.asdict(train_config)
  if runtime_config is not None:
    payload["runtime"] = dataclasses.asdict(runtime_config)
  _write_json(config_path(model_dir), payload)


def read_run_config(model_dir):
  """The RunConfig saved in `model_dir`; FileNotFoundError when there is none."""
  path = config_path(model_dir)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"No {CONFIG_FILE} in model_dir. Received: {model_dir!r}")
  with tf.io.gfile.GFile(path) as f:
    payload = json.load(f)
  return RunConfig(
      model=_from_dict(ModelConfig, {**_MODEL_FIELDS_BEFORE_RECORDED, **payload["model"]}),
      data=_from_dict(DataConfig, payload["data"]),
      class_names=tuple(payload["class_names"]),
      train=_from_dict(config_lib.TrainConfig, payload["train"]) if "train" in payload else None,
      runtime=(_from_dict(config_lib.RuntimeConfig, payload["runtime"])
               if "runtime" in payload else None))


def check_resume_compatible(saved, model_config, class_names):
  """Raises ValueError when `saved` (a RunConfig) describes another model or other classes."""
  current = dataclasses.asdict(model_config)
  previous = dataclasses.asdict(saved.model)
  differences = sorted(name for name in current
                       if name not in _RESUMABLE_MODEL_FIELDS and current[name] != previous.get(name))
  if differences:
    details = ", ".join(f"{name}: saved {previous.get(name)!r}, requested {current[name]!r}"
                        for name in differences)
    raise ValueError(
        f"model_dir holds a run of another model ({details}). Use a new --model_dir, or "
        "--init_checkpoint to start from its weights. Nothing was written.")
  if tuple(saved.class_names) != tuple(class_names):
    raise ValueError(
        f"model_dir holds a run with {len(saved.class_names)} classes {list(saved.class_names)[:10]}, "
        f"the data now has {len(class_names)} classes {list(class_names)[:10]}. Use a new "
        "--model_dir. Nothing was written.")


def write_stats(model_dir, stats, name=STATS_FILE):
  _write_json(os.path.join(model_dir, name), stats)


def read_stats(model_dir, name=STATS_FILE):
  with tf.io.gfile.GFile(os.path.join(model_dir, name)) as f:
    return json.load(f)


def read_history(model_dir):
  """Every history entry (evaluation or epoch) the runs in model_dir made, oldest first."""
  path = os.path.join(model_dir, HISTORY_FILE)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  # A run from before history.json: its last stats.json held the history.
  if tf.io.gfile.exists(os.path.join(model_dir, STATS_FILE)):
    return read_stats(model_dir).get("history", [])
  return []


def append_history(model_dir, entry):
  """Adds `entry` to model_dir's history as soon as it is made, so that an interrupted run
  loses none; the history is never replaced, whatever later runs in model_dir do."""
  # Rewritten whole (a few hundred entries at most), as remote file systems cannot append.
  atomic_write.write_atomically(os.path.join(model_dir, HISTORY_FILE),
                                json.dumps([*read_history(model_dir), entry], indent=1))


def checkpoint_step(checkpoint_path):
  """The global step of a trainer checkpoint path (`.../ckpt-<step>`)."""
  return int(checkpoint_path.rsplit("-", 1)[1])


def finished_stats(model_dir):
  """stats.json of the run in model_dir when it has trained all its steps and nothing since
  (its latest checkpoint is the step stats.json ends at); None otherwise."""
  if not tf.io.gfile.exists(os.path.join(model_dir, STATS_FILE)):
    return None
  stats = read_stats(model_dir)
  latest = tf.train.latest_checkpoint(model_dir)
  if latest is None or stats.get("step") is None or stats.get("step") != stats.get("total_steps"):
    return None
  return stats if checkpoint_step(latest) == stats["step"] else None


# Steps --mode=continuous_eval has evaluated: {"evaluations": [{"step", "checkpoint", eval_*}]}.
CONTINUOUS_EVAL_FILE = "continuous_eval.json"


def _is_run_defining(section, name):
  if section == "model":
    return name not in _RESUMABLE_MODEL_FIELDS
  return section == "data" and name in _RUN_DEFINING_DATA_FIELDS


def _may_change_when_finished(section, name):
  return (section == "runtime" or f"{section}.{name}" in MAY_CHANGE_WHEN_FINISHED
          or (section == "model" and name in _RESUMABLE_MODEL_FIELDS))


def _without_length(name, value):
  """A TRAIN_RECIPE_FIELDS value with the run's length left out (phases keep the rest)."""
  if name == "phases":
    return tuple((phase.name, phase.trainable, phase.schedule) for phase in value)
  return None if name in RUN_LENGTH_FIELDS else value


def with_saved_run(requested, saved, model_dir, settable, given, finished=None):
  """`requested` (an ExperimentConfig) completed from `saved` (a RunConfig) where no flag was given.

  settable: the "section.field" names (model, data, train, runtime) that flags set;
  given: those the command gave, each to the name of the flag that gave it. A settable
  field nobody gave takes the run's value; the training recipe (TRAIN_RECIPE_FIELDS)
  moves as one. A given value differing from the run's is refused when it would change
  the model or what the data is (naming both values), and otherwise replaces it (logged).
  Fields no flag sets keep `requested`'s values.

  finished: stats.json of a run that trained all its steps, when the command trains: then
  only where the data is and how training runs and reports may change (MAY_CHANGE_WHEN_FINISHED)
  and the run's length, given alone, extends the run's own recipe; whether it grows is
  the caller's to check. Anything else given differently is refused.
  """
  saved_sections = {"model": saved.model, "data": saved.data, "train": saved.train,
                    "runtime": saved.runtime}
  recipe_given = any(f"train.{name}" in given for name in TRAIN_RECIPE_FIELDS
                     if not (finished and name in RUN_LENGTH_FIELDS))
  length_given = any(f"train.{name}" in given for name in RUN_LENGTH_FIELDS)
  refused, sections = [], {}
  for section, current in (("model", requested.model), ("data", requested.data),
                           ("train", requested.train), ("runtime", requested.runtime)):
    previous = saved_sections[section]
    if previous is None:
      sections[section] = current
      continue
    changes = {}
    for field in dataclasses.fields(current):
      key = f"{section}.{field.name}"
      ours, theirs = getattr(current, field.name), getattr(previous, field.name)
      if key not in settable or ours == theirs:
        continue
      asks = f"{'--' + given[key] if key in given else 'the training recipe given'} asks for "
      asks += f"{field.name}={ours!r}, the run has {theirs!r}"
      if section == "train" and field.name in TRAIN_RECIPE_FIELDS:
        chosen = length_given if field.name in RUN_LENGTH_FIELDS else key in given
        if (finished and chosen
            and _without_length(field.name, ours) == _without_length(field.name, theirs)):
          continue  # The run's recipe with another length: the caller checks that it grows.
        if not recipe_given:
          changes[field.name] = theirs
        elif finished:
          refused.append(asks)
      elif key not in given:
        changes[field.name] = theirs
      elif _is_run_defining(section, field.name) or (
          finished and not _may_change_when_finished(section, field.name)):
        refused.append(asks)
      else:
        logging.info("--%s: %s=%r instead of the run's %r.", given[key], field.name, ours, theirs)
    sections[section] = dataclasses.replace(current, **changes)
  if refused:
    finished_note = ""
    if finished:
      finished_note = (f" The run has trained all its {finished['step']} steps: a larger "
                       "--train_epochs or --train_steps extends it with its own settings.")
    raise ValueError(
        f"model_dir {model_dir} holds a run that differs from the flags given ({'; '.join(refused)}"
        f"; {CONFIG_FILE} has the run's settings). Leave those flags out to use the run's, or "
        f"use a new --model_dir.{finished_note} Nothing was written.")
  if recipe_given or saved.train is None:
    logging.info("Using %s's settings not given as flags, and the training recipe given.",
                 config_path(model_dir))
  else:
    logging.info("Using %s's settings not given as flags, its training recipe included.",
                 config_path(model_dir))
  return dataclasses.replace(requested, **sections)


def clean(model_dir):
  """Deletes what model_dir holds (the official --clean); RunLockedError while a trainer runs there."""
  if not tf.io.gfile.isdir(model_dir):
    return
  with run_lock.RunLock(model_dir):
    for name in tf.io.gfile.listdir(model_dir):
      name = name.rstrip("/")
      if name == run_lock.LOCK_FILE:
        continue
      path = os.path.join(model_dir, name)
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)
  logging.info("--clean: deleted what %s held.", model_dir)
